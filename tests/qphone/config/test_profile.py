"""Profiles (qphone.config.profile): loading, relative paths, and errors that name the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from qphone.config.profile import Policy, Profile, ProfileError, load_profile
from tests.support.kme_fixtures import KmePki, make_pki
from tests.support.profiles import write_profile


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> KmePki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_profile_loads_and_resolves_relative_paths(pki: KmePki, tmp_path: Path) -> None:
    p = load_profile(write_profile(tmp_path / "alice.toml", pki))
    assert isinstance(p, Profile)
    assert (p.sae_id, p.peer_sae_id, p.kme_url) == ("alice", "bob", "https://127.0.0.1:8441")
    assert p.identity_file == tmp_path / "alice.identity"
    assert p.known_peers == tmp_path / "alice.known_peers.json"
    assert p.client_cert == pki.demo.alice.cert


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"kme.url": "http://127.0.0.1:8441"}, "must be an https:// URL"),
        ({"kme.url": "https://127.0.0.1:99999"}, "invalid port"),
        ({"kme.ca_cert": "/nonexistent/ca.pem"}, r"does not exist: fix the path"),
        ({"kme.client_key": "<omit>"}, r"\[kme\] client_key is missing: set it to"),
        ({"sae.id": "al ice"}, "not a valid SAE ID"),
        ({"peer.sae_id": "alice"}, "own ID"),
        ({"kme.colour": "red"}, "unknown key 'colour' in \\[kme\\]"),
        ({"extra.x": "1"}, "unknown section \\[extra\\]"),
        ({"identity.file": ""}, "must be a non-empty string"),
    ],
)
def test_profile_errors_name_the_fix(
    pki: KmePki, tmp_path: Path, over: dict[str, str], match: str
) -> None:
    with pytest.raises(ProfileError, match=match):
        load_profile(write_profile(tmp_path / "p.toml", pki, **over))


def test_profile_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="qkd-keyserver demo"):
        load_profile(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("[sae\nid=")
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_profile(tmp_path / "bad.toml")


def _with_policy(path: Path, pki: KmePki, policy: str) -> Path:
    write_profile(path, pki)
    path.write_text(path.read_text() + "[policy]\n" + policy + "\n")
    return path


def test_policy_defaults_are_safe_and_can_be_set(pki: KmePki, tmp_path: Path) -> None:
    default = load_profile(write_profile(tmp_path / "a.toml", pki)).policy
    assert default == Policy()
    assert (default.min_otp_tag_bits, default.max_epoch_seconds) == (64, 60.0)
    assert (default.max_epoch_frames, default.allow_pqc_only) == (3000, False)
    assert default.max_overdue_epochs == 2
    text = (
        "min_otp_tag_bits = 128\nmax_epoch_seconds = 5\nmax_epoch_frames = 250\n"
        "allow_pqc_only = true\nmax_overdue_epochs = 4"
    )
    set_ = load_profile(_with_policy(tmp_path / "b.toml", pki, text)).policy
    assert set_ == Policy(128, 5.0, 250, True, 4)


@pytest.mark.parametrize(
    ("policy", "match"),
    [
        ("min_otp_tag_bits = 48", r"\[policy\] min_otp_tag_bits = 48: set it to 32, 64 or 128"),
        ("min_otp_tag_bits = true", "set it to 32, 64 or 128"),
        ("max_epoch_seconds = 0", "max_epoch_seconds = 0: set it to a number of seconds"),
        ("max_epoch_seconds = '60'", "set it to a number of seconds"),
        ("max_epoch_frames = 2.5", "max_epoch_frames = 2.5: set it to an integer"),
        ("allow_pqc_only = 1", "allow_pqc_only = 1: set it to true or false"),
        ("max_overdue_epochs = 0", "max_overdue_epochs = 0: set it to an integer from 1"),
        ("max_rotation = 3", r"unknown key 'max_rotation' in \[policy\]; allowed: min_otp"),
    ],
)
def test_policy_errors_name_the_fix(pki: KmePki, tmp_path: Path, policy: str, match: str) -> None:
    with pytest.raises(ProfileError, match=match):
        load_profile(_with_policy(tmp_path / "p.toml", pki, policy))


def test_policy_defaults_are_the_cores() -> None:
    from qphone.core.handshake import ResponderPolicy
    from qphone.core.session import DEFAULT_MAX_OVERDUE_EPOCHS
    from qphone.endpoint.options import CallOptions
    from qphone.endpoint.policy import responder_policy

    core = ResponderPolicy()
    assert responder_policy(Policy(), CallOptions(), None) == core
    assert Policy().max_overdue_epochs == DEFAULT_MAX_OVERDUE_EPOCHS
