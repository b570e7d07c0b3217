"""qphone's ETSI 014 client (qphone.kmeclient) against the real keyserver pair on loopback."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qphone.config.profile import load_profile
from qphone.core.qkd import QkdKey
from qphone.kmeclient import (
    KmeClient,
    KmeEavesdropperAlarm,
    KmeError,
    KmeNoRoute,
    KmeOutOfKeys,
    KmeProtocolError,
    KmeRejected,
    KmeRelayFailed,
    KmeUnavailable,
    kme_error,
)
from tests.support.kme_fixtures import (
    DeterministicSource,
    KmePki,
    PairEnd,
    make_pki,
    running_pair,
)
from tests.support.profiles import write_profile

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
        # 3 x 1024 bits and their authentication: a one-hop pair gives direct keys once its
        # link is in sync (3 x 128 bits of one-time MAC key for the key IDs: 13.5 keys of 256
        # bits, 14 as counted), a relay message before that (one 256-bit MAC key: 13)
        spent = st.stored_key_count - (await alice.status("bob")).stored_key_count
        assert spent in (13, 14), spent
        ids = [k.key_id for k in keys]
        got = await bob.dec_keys("alice", ids[::-1])
        assert got == keys[::-1]
        with pytest.raises(KmeRejected) as e:
            await bob.dec_keys("alice", ids[:1])  # already delivered
        assert e.value.status == 400 and "not found" in e.value.message
        default = await alice.enc_keys("bob", 1)
        assert default[0].bits == 256


async def test_typed_errors(pki: KmePki, pair: Pair, free_port: Callable[[], int]) -> None:
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


async def test_out_of_keys_when_the_kme_pool_is_empty(pki: KmePki, tmp_path: Path) -> None:
    source = DeterministicSource(block_bytes=4096, limit=2)  # 1 segment for A's masters
    async with running_pair(pki.demo, tmp_path, source=source, fill=False) as (a, _):
        while a.stored_key_count() < 128:
            await asyncio.sleep(0.01)
        async with client(pki, a, "alice") as alice:
            # 4 kB for A's masters: 3 x (1 kB + a 32-byte one-time MAC key per relay)
            keys = [(await alice.enc_keys("bob", 1, 8192))[0] for _ in range(3)]
            assert len({k.material for k in keys}) == 3
            with pytest.raises(KmeOutOfKeys):
                await alice.enc_keys("bob", 1, 8192)


async def test_client_from_profile(pki: KmePki, pair: Pair, tmp_path: Path) -> None:
    a, _ = pair
    prof = load_profile(write_profile(tmp_path / "alice.toml", pki, **{"kme.url": a.url}))
    async with KmeClient.from_profile(prof) as c:
        assert (await c.status(prof.peer_sae_id)).master_sae_id == "alice"


@pytest.mark.parametrize(
    ("status", "message", "details", "kind"),
    [
        # qkd-keyserver says why in the details: the words of the message do not matter
        (503, "whatever the words", [{"reason": "out_of_keys"}], KmeOutOfKeys),
        (503, "not enough key, but", [{"reason": "no_route"}], KmeNoRoute),
        (503, "relay failed", [{"reason": "relay_failed"}], KmeRelayFailed),
        # an unknown reason is a vendor's own word: the message decides, as with no reason
        (503, "not enough key material", [{"reason": "Not enough keys"}], KmeOutOfKeys),
        (503, "busy", [{"reason": "overloaded"}], KmeUnavailable),
        # a shortage on a good route near an alarmed link is a shortage, retried
        (503, "short", [{"reason": "out_of_keys", "qkd_link": {"eavesdropper_alarm": True}}],
         KmeOutOfKeys),
        # an eavesdropper alarm wins over any reason: no key will come, fail closed
        (503, "no route", [{"reason": "no_route", "qkd_link": {"eavesdropper_alarm": True}}],
         KmeEavesdropperAlarm),
        # a vendor KME without reasons: its message is all there is
        (503, "Keys are not available", [], KmeOutOfKeys),
        (400, "insufficient key material", [], KmeOutOfKeys),
        (503, "maintenance", [], KmeUnavailable),
        (401, "who are you", [], KmeRejected),
        (400, "bad size", [], KmeRejected),
        (418, "teapot", [], KmeProtocolError),
    ],
)  # fmt: skip
def test_kme_errors_are_typed_by_reason_first(
    status: int, message: str, details: list[object], kind: type[Exception]
) -> None:
    err = kme_error("https://kme", status, message, details)
    assert type(err) is kind, err
    assert message in str(err) or isinstance(err, KmeRejected)
    if kind is KmeNoRoute:
        assert isinstance(err, KmeOutOfKeys)  # retried as a shortage is
        assert "qkd-keyserver network status" in str(err)


@given(
    st.integers(100, 599),
    st.text(max_size=200),
    st.lists(
        st.dictionaries(
            st.text(max_size=8), st.none() | st.text(max_size=8) | st.booleans(), max_size=3
        ),
        max_size=3,
    ),
)
def test_any_error_answer_gives_one_typed_error(
    status: int, message: str, details: list[object]
) -> None:
    assert isinstance(kme_error("https://kme", status, message, details), KmeError)
