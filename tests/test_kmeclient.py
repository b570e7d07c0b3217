"""qphone's ETSI 014 client, key pool and profile, against the real keyserver pair on loopback."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from qphone.core.qkd import QkdKey
from qphone.kmeclient import (
    KmeClient,
    KmeEavesdropperAlarm,
    KmeOutOfKeys,
    KmeRejected,
    KmeUnavailable,
    QkdKeyPool,
)
from qphone.profile import Profile, ProfileError, load_profile
from tests.support.kme_fixtures import (
    DeterministicSource,
    KmePki,
    PairEnd,
    free_port,
    make_pki,
    running_pair,
)

Pair = tuple[PairEnd, PairEnd]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> KmePki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def client(pki: KmePki, kme: PairEnd, who: str) -> KmeClient:
    certs = {"alice": pki.demo.alice, "bob": pki.demo.bob, "mallory": pki.mallory}[who]
    return KmeClient(kme.url, ca_cert=pki.demo.ca, client_cert=certs.cert, client_key=certs.key)


@pytest.fixture
async def pair(pki: KmePki, tmp_path: Path) -> AsyncIterator[Pair]:
    async with running_pair(pki.demo, tmp_path) as p:
        yield p


async def test_status_enc_dec(pki: KmePki, pair: Pair) -> None:
    a, b = pair
    async with client(pki, a, "alice") as alice, client(pki, b, "bob") as bob:
        st = await alice.status("bob")
        assert (st.source_kme_id, st.target_kme_id, st.slave_sae_id) == ("KME-A", "KME-B", "bob")
        assert st.stored_key_count >= 2000 and not st.eavesdropper_alarm
        assert st.link["blocks_ok"] > 0
        keys = await alice.enc_keys("bob", 3, 1024)
        assert all(isinstance(k, QkdKey) and k.bits == 1024 for k in keys)
        # 3 x 1024 bits, plus the 256-bit one-time MAC key of the relay message
        assert (await alice.status("bob")).stored_key_count == st.stored_key_count - 13
        ids = [k.key_id for k in keys]
        got = await bob.dec_keys("alice", ids[::-1])
        assert got == keys[::-1]
        with pytest.raises(KmeRejected) as e:
            await bob.dec_keys("alice", ids[:1])  # already delivered
        assert e.value.status == 400 and "not found" in e.value.message
        default = await alice.enc_keys("bob", 1)
        assert default[0].bits == 256


async def test_typed_errors(pki: KmePki, pair: Pair) -> None:
    a, b = pair
    async with client(pki, a, "mallory") as mallory:
        with pytest.raises(KmeRejected) as e:
            await mallory.status("bob")
        assert e.value.status == 401 and "client_cert" in str(e.value)
    async with client(pki, a, "alice") as alice:
        with pytest.raises(KmeOutOfKeys, match="wait for the QKD link"):
            await alice.enc_keys("bob", 128, 65536)
        with pytest.raises(KmeRejected) as e:
            await alice.enc_keys("nobody", 1, 256)
        assert e.value.status == 400
        with pytest.raises(ValueError):
            await alice.enc_keys("bob", 1, 100)
    async with client(pki, b, "bob") as bob:
        with pytest.raises(KmeRejected):
            await bob.dec_keys("alice", [uuid.uuid4()])
    port = free_port()  # nothing listens there
    dead = KmeClient(
        f"https://127.0.0.1:{port}",
        ca_cert=pki.demo.ca,
        client_cert=pki.demo.alice.cert,
        client_key=pki.demo.alice.key,
        timeout=2.0,
    )
    async with dead:
        with pytest.raises(KmeUnavailable, match="check the KME is running"):
            await dead.status("bob")


async def test_wrong_ca_is_unavailable_naming_ca_cert(pki: KmePki, pair: Pair) -> None:
    a, _ = pair
    rogue_ca = pki.rogue.cert.parent / "ca.pem"
    c = KmeClient(
        a.url, ca_cert=rogue_ca, client_cert=pki.demo.alice.cert, client_key=pki.demo.alice.key
    )
    async with c:
        with pytest.raises(KmeUnavailable, match="ca_cert"):
            await c.status("bob")


async def test_eavesdropper_alarm(pki: KmePki, tmp_path: Path) -> None:
    source = DeterministicSource(abort_every=1)
    async with running_pair(pki.demo, tmp_path, source=source, fill=False) as (a, _):
        while a.stats.blocks_aborted < 2:
            await asyncio.sleep(0.01)
        async with client(pki, a, "alice") as alice:
            assert (await alice.status("bob")).eavesdropper_alarm
            with pytest.raises(KmeEavesdropperAlarm, match="eavesdropper"):
                await alice.enc_keys("bob", 1, 256)
            pool = QkdKeyPool(alice, "bob", 256, target=4, low_water=1, retry_interval=0.05)
            try:
                with pytest.raises(KmeEavesdropperAlarm):
                    await pool.get(timeout=2)
            finally:
                await pool.aclose()


async def test_pool_prefetches_and_warns_at_low_water(pki: KmePki, pair: Pair) -> None:
    a, b = pair
    warnings: list[int] = []
    async with client(pki, a, "alice") as alice, client(pki, b, "bob") as bob:
        pool = QkdKeyPool(
            alice, "bob", 512, target=8, low_water=3, batch=4, on_low_water=warnings.append
        )
        pool.start()
        try:
            for _ in range(200):
                if pool.available == 8:
                    break
                await asyncio.sleep(0.01)
            assert pool.available == 8
            taken = [pool.take_nowait() for _ in range(6)]  # no network wait
            assert warnings == [2]  # once, when it fell below 3
            taken.append(await pool.get())
            assert len({k.key_id for k in taken}) == 7 and all(k.bits == 512 for k in taken)
            got = await bob.dec_keys("alice", [k.key_id for k in taken])
            assert got == taken
            for _ in range(200):
                if pool.available == 8:
                    break
                await asyncio.sleep(0.01)
            assert pool.available == 8  # refilled in the background
        finally:
            await pool.aclose()


async def test_pool_reports_out_of_keys_when_empty(pki: KmePki, tmp_path: Path) -> None:
    source = DeterministicSource(block_bytes=4096, limit=2)  # 1 segment for A's masters
    async with running_pair(pki.demo, tmp_path, source=source, fill=False) as (a, _):
        while a.stored_key_count() < 128:
            await asyncio.sleep(0.01)
        async with client(pki, a, "alice") as alice:
            pool = QkdKeyPool(alice, "bob", 8192, target=8, low_water=0, retry_interval=0.05)
            try:
                # 4 kB for A's masters: 3 x (1 kB + a 32-byte one-time MAC key per relay)
                keys = [await pool.get(timeout=2) for _ in range(3)]
                assert len({k.material for k in keys}) == 3
                with pytest.raises(KmeOutOfKeys):
                    await pool.get(timeout=0.5)
                with pytest.raises(KmeOutOfKeys):
                    pool.take_nowait()
            finally:
                await pool.aclose()


# -- profiles ------------------------------------------------------------------------------------
def write_profile(path: Path, pki: KmePki, **over: str) -> Path:
    fields = {
        "sae.id": "alice",
        "kme.url": "https://127.0.0.1:8441",
        "kme.ca_cert": str(pki.demo.ca),
        "kme.client_cert": str(pki.demo.alice.cert),
        "kme.client_key": str(pki.demo.alice.key),
        "peer.sae_id": "bob",
        "identity.file": "alice.identity",
        "identity.known_peers": "alice.known_peers.json",
    }
    fields.update(over)
    sections: dict[str, list[str]] = {}
    for k, v in fields.items():
        if v == "<omit>":
            continue
        s, name = k.split(".")
        sections.setdefault(s, []).append(f'{name} = "{v}"')
    path.write_text("".join(f"[{s}]\n" + "\n".join(lines) + "\n" for s, lines in sections.items()))
    return path


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


async def test_client_from_profile(pki: KmePki, pair: Pair, tmp_path: Path) -> None:
    a, _ = pair
    prof = load_profile(write_profile(tmp_path / "alice.toml", pki, **{"kme.url": a.url}))
    async with KmeClient.from_profile(prof) as c:
        assert (await c.status(prof.peer_sae_id)).master_sae_id == "alice"
