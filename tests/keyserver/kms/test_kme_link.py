"""The KME pair fed by the real simulated BB84 link (keyserver.qkd.simulator in a child process)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from keyserver.kms.config import LinkConfig
from keyserver.kms.kme import Kme
from qphone.kmeclient import KmeClient, KmeEavesdropperAlarm
from tests.support.kme_fixtures import KmePki, make_pki, pair_configs, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> KmePki:
    return make_pki(tmp_path_factory.mktemp("pki"))


async def start(pki: KmePki, tmp: Path, eve: float) -> tuple[Kme, Kme]:
    ca, cb = pair_configs(pki.demo, tmp, max_key_count=400)
    link = LinkConfig(
        role="source", distance_km=10.0, eve_fraction=eve, seed=3, pulses_per_block=20_000_000
    )
    a = Kme(dataclasses.replace(ca, link=link))  # paced in real time, BB84 in a child process
    b = Kme(cb)
    await b.start()
    await a.start()
    return a, b


def clients(pki: KmePki, a: Kme, b: Kme) -> tuple[KmeClient, KmeClient]:
    d = pki.demo
    return (
        KmeClient(a.url, ca_cert=d.ca, client_cert=d.alice.cert, client_key=d.alice.key),
        KmeClient(b.url, ca_cert=d.ca, client_cert=d.bob.cert, client_key=d.bob.key),
    )


async def test_bb84_link_feeds_both_kmes_identically(pki: KmePki, tmp_path: Path) -> None:
    a, b = await start(pki, tmp_path, eve=0.0)
    alice, bob = clients(pki, a, b)
    try:
        await wait_for(lambda: a.stored_key_count() >= 16, timeout=60, what="BB84 key")
        st = await alice.status("bob")
        assert st.link["blocks_ok"] >= 1 and not st.eavesdropper_alarm
        assert 0.02 < st.link["last_qber"] < 0.05  # e_d = 3.3 % plus dark counts
        assert st.link["key_rate_bps"] > 0
        keys = await alice.enc_keys("bob", 4, 512)
        assert await bob.dec_keys("alice", [k.key_id for k in keys]) == keys
        assert len({k.material for k in keys}) == 4
    finally:
        await alice.aclose()
        await bob.aclose()
        await a.stop()
        await b.stop()


async def test_eavesdropper_blocks_are_never_delivered(pki: KmePki, tmp_path: Path) -> None:
    a, b = await start(pki, tmp_path, eve=0.8)  # QBER ~ 3 % + 0.8/4: far above the threshold
    alice, bob = clients(pki, a, b)
    try:
        await wait_for(lambda: a.stats.blocks_aborted >= 3, timeout=60, what="aborted blocks")
        assert a.stats.blocks_ok == 0 and a.stats.eavesdropper_alarm
        assert a.stats.last_qber is not None and a.stats.last_qber > 0.15
        assert a.store.stored_bytes("KME-A") == 0 and a.store.stored_bytes("KME-B") == 0
        await wait_for(lambda: b.stats.blocks_aborted >= 3, what="stats at B")
        assert b.store.stored_bytes("KME-A") == 0 and b.store.stored_bytes("KME-B") == 0
        st = await bob.status("alice")
        assert st.eavesdropper_alarm and st.stored_key_count == 0
        with pytest.raises(KmeEavesdropperAlarm):
            await alice.enc_keys("bob", 1, 256)
    finally:
        await alice.aclose()
        await bob.aclose()
        await a.stop()
        await b.stop()
