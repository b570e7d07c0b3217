"""Profiles (qphone.config.profile): loading, relative paths, and errors that name the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from qphone.config.profile import Profile, ProfileError, load_profile
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
