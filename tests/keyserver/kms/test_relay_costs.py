"""What a relay costs, counted (never timed): node-to-node requests, store transactions, the
in-memory stock; the call-capacity arithmetic; and ``bench pair`` run briefly in-process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyserver.kms.callcapacity import AES, OTP, route_capacity
from keyserver.kms.linkkeystore import OutOfLinkKey, SliceUnavailable, Spend
from keyserver.kms.nodestore import NodeStore
from keyserver.kms.relayjournal import FinalHop, FinalOutcome, RelayOut
from keyserver.network import pairbench as bench
from tests.keyserver.kms.test_node_core import LINK, pair, share_keys
from tests.support.node_fixtures import DIAMOND, Net, running_network, topology

EXT_KEYS = "/kmapi/v1/ext_keys"
ACK = "/kmapi/v1/ext_keys/ack"


def _sent(net: Net, node: str, peer: str, path: str) -> int:
    client = net.nodes[node].peers.get(peer)
    return 0 if client is None else client.sent.get(path, 0)


async def _relay(net: Net, master: str, slave: str, number: int) -> None:
    async with net.sae(master) as m, net.sae(slave) as s:
        r = await m.post(f"/api/v1/keys/{slave}/enc_keys", json={"number": number})
        assert r.status_code == 200, r.text
        ids = [{"key_ID": k["key_ID"]} for k in r.json()["keys"]]
        r2 = await s.post(f"/api/v1/keys/{master}/dec_keys", json={"key_IDs": ids})
        assert r2.status_code == 200 and r2.json()["keys"] == r.json()["keys"]


async def test_one_hop_is_one_request_and_its_reply_the_ack(tmp_path: Path) -> None:
    """alice@a -> carol@b is one hop: one ext_keys per request (8 keys or 1), no ack message and
    nothing in the target's ack outbox; alice@a -> bob@d (two hops) still acks by message.
    (One hop relays: direct keys off, test_direct_keys.py.)"""
    async with running_network(tmp_path, topology(DIAMOND), direct_one_hop=False) as net:
        for number in (8, 1, 1):
            await _relay(net, "alice", "carol", number)
        assert _sent(net, "a", "b", EXT_KEYS) == 3
        assert _sent(net, "b", "a", ACK) == 0
        assert net.nodes["b"].store.relays.acks_out() == []
        assert net.nodes["a"].counters["relays_delivered"] == 3
        await _relay(net, "alice", "bob", 2)
        assert net.nodes["a"].counters["relays_delivered"] == 4
        assert _sent(net, "d", "a", ACK) == 1  # the far end of two hops acks by message
        assert net.nodes["a"].store.relays.pending_count() == 0


def _final(relay_id: uuid.UUID, keys: list[uuid.UUID], shares: tuple[bytes, ...]) -> FinalHop:
    return FinalHop(
        relay_id,
        tuple(keys),
        0,
        1,
        "alice",
        "bob",
        "a",
        "https://a/ack",
        shares,
        2**50,
        2**50,
        10**9,
        ack_in_reply=True,
    )


def test_n_keys_cost_one_transaction_at_each_step(tmp_path: Path) -> None:
    a, b = pair(tmp_path)
    share_keys(a, b, 64)
    n, size = 16, 32
    rid, kids = uuid.uuid4(), [uuid.uuid4() for _ in range(n)]
    t0 = a.transactions
    [sl] = a.begin_relay(
        RelayOut(rid, "alice", "bob", "b", tuple(kids), "pending", 2**50),
        [Spend(LINK, "a", n * size + 32)],
    )
    assert a.transactions == t0 + 1
    t1 = b.transactions
    assert (
        b.link_keys.peek(LINK, "a", sl.start, n * size + 32) == sl.material
    )  # a read: no transaction
    assert b.transactions == t1
    shares = tuple(sl.material[i * size : (i + 1) * size] for i in range(n))
    outcome = b.accept_leg((LINK, "a", sl.start, n * size + 32), _final(rid, kids, shares))
    assert outcome is FinalOutcome.COMPLETE and b.transactions == t1 + 1
    assert b.relays.acks_out() == []  # the reply carries the ack
    got = b.held.take("alice", "bob", kids)
    assert [k.material for k in got] == list(shares) and b.transactions == t1 + 2
    assert a.relays.deliver(rid) and a.transactions == t0 + 2
    with pytest.raises(SliceUnavailable):  # the slice is spent at b: a replay finds it gone
        b.link_keys.peek(LINK, "a", sl.start, n * size + 32)


def _sum(store: NodeStore, owner: str) -> int:
    db = sqlite3.connect(f"file:{store.path}?immutable=1", uri=True)  # the store holds its lock
    try:
        row = db.execute(
            "SELECT COALESCE(SUM(unspent), 0) FROM blocks WHERE link=? AND owner=?", (LINK, owner)
        ).fetchone()
    finally:
        db.close()
    return int(row[0])


_OPS = st.lists(
    st.tuples(
        st.sampled_from(["share", "spend", "forward", "peek", "burn", "cursor", "repair"]),
        st.integers(1, 400),
    ),
    min_size=1,
    max_size=25,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=_OPS)
def test_stock_in_memory_matches_the_blocks(tmp_path: Path, ops: list[tuple[str, int]]) -> None:
    """Whatever happens to the streams (rollbacks included), stock_bytes is the blocks' sum."""
    d = tmp_path / uuid.uuid4().hex
    a, b = pair(d)
    seq = 0
    try:
        for op, x in ops:
            if op == "share":
                seq += 1
                share_keys(a, b, 1 + x % 8, size=64, seq=seq)
            elif op == "spend":
                try:
                    [sl] = a.link_keys.spend([Spend(LINK, "a", x)])
                except (OutOfLinkKey, SliceUnavailable):
                    continue
                with contextlib.suppress(SliceUnavailable):  # b may have used it already
                    b.link_keys.consume(LINK, "a", sl.start, x)
            elif op == "forward":  # b consumes a slice and spends its own: one transaction
                view = b.link_keys.view(LINK, "a")
                with contextlib.suppress(SliceUnavailable, OutOfLinkKey):  # rolled back
                    b.link_keys.forward((LINK, "a", view.cursor, x), Spend(LINK, "b", x))
            elif op == "peek":
                with contextlib.suppress(SliceUnavailable):
                    b.link_keys.peek(LINK, "a", b.link_keys.view(LINK, "a").cursor, x)
            elif op == "burn":
                b.link_keys.burn(LINK, "b", x, x)
            elif op == "cursor":
                b.link_keys.owner_cursor(LINK, "a", a.link_keys.view(LINK, "a").cursor + x % 3)
            else:
                end = max(a.link_keys.view(LINK, "b").end, b.link_keys.view(LINK, "b").end) + x
                a.link_keys.repair(LINK, "b", end)
                b.link_keys.repair(LINK, "b", end)
            for s in (a, b):
                for owner in ("a", "b"):
                    assert s.link_keys.stock_bytes(LINK, owner) == _sum(s, owner), (op, x)
    finally:
        a.close()
        b.close()


def test_call_capacity_arithmetic() -> None:
    assert OTP.link_bits_per_s == 2 * 15_200 + 256  # both directions + one MAC key a second
    assert AES.link_bits_per_s == pytest.approx((2 * 256 + 256) / 10)
    cap = route_capacity(1_000_000, 4, 100.0)
    otp, aes = cap["otp"], cap["aes"]
    assert otp["calls_link_bound"] == round(1e6 / 30_656, 2) and otp["calls_kms_bound"] == 100
    assert otp["calls"] == 32 and otp["limited_by"] == "link"
    assert otp["route_link_bits_per_call_s"] == 4 * 30_656
    assert aes["calls_kms_bound"] == 1000 and aes["calls"] == 1000 and aes["limited_by"] == "kms"
    assert route_capacity(None, 1, None)["otp"]["calls"] is None


def _bench_info(net: Net) -> dict[str, Any]:
    """What ``qkd-keyserver network`` writes to network.json, for an in-process network."""
    plan, pki = net.plan, net.pki
    return {
        "topology": plan.topology.name,
        "ca_cert": str(pki.ca_cert("sae")),
        "nodes": {n: {"config": str(p.config)} for n, p in plan.nodes.items()},
        "saes": {
            s.id: {
                "node": s.node,
                "kme_url": net.nodes[s.node].sae_url,
                "cert": str(pki.sae(s.id).cert),
                "key": str(pki.sae(s.id).key),
            }
            for s in plan.topology.saes
        },
    }


async def test_bench_pair_compares_real_and_bare_with_one_client(tmp_path: Path) -> None:
    """The benchmark itself, briefly, against in-process nodes (two hops of the diamond): both
    sides served pairs without error, the ratio and the relay time per hop are reported."""
    os.environ.setdefault("QKD_LOG_LEVEL", "WARNING")
    async with running_network(tmp_path, topology(DIAMOND)) as net:
        r = await asyncio.to_thread(bench.compare, _bench_info(net), 1.0, 1, 256, 20)
    assert r["hops"] == 2 and r["route"][0] == "a" and r["route"][-1] == "d"
    for side in ("real", "bare"):
        assert r[side]["pairs"] > 0 and r[side]["errors"] == 0, r[side]
    assert r["real"]["duplicates"] == 0
    assert r["ratio_pairs_per_s"] == round(r["real"]["pairs_per_s"] / r["bare"]["pairs_per_s"], 3)
    rt = r["relay_time"]
    assert rt["errors"] == 0
    assert rt["p50_ms_per_hop"] == pytest.approx(rt["p50_ms"] / 2, abs=0.01)  # both rounded
    assert set(r["call_capacity"]) == {"otp", "aes"}
    assert any("ratio real/bare" in line for line in bench.summary_lines(r))


async def test_concurrent_requests_of_one_pair_go_as_fewer_relays(tmp_path: Path) -> None:
    """16 enc_keys at once for alice -> carol: every caller gets its own keys (all distinct, all
    collected once by carol), in fewer relays (hop messages) than requests (one hop relays:
    direct keys off)."""
    async with running_network(tmp_path, topology(DIAMOND), direct_one_hop=False) as net:
        async with net.sae("alice") as alice, net.sae("carol") as carol:
            replies = await asyncio.gather(
                *(
                    alice.post("/api/v1/keys/carol/enc_keys", json={"number": 1 + i % 3})
                    for i in range(16)
                )
            )
            assert [r.status_code for r in replies] == [200] * 16
            keys = [r.json()["keys"] for r in replies]
            assert [len(k) for k in keys] == [1 + i % 3 for i in range(16)]
            flat = [k for ks in keys for k in ks]
            assert len({k["key_ID"] for k in flat}) == len({k["key"] for k in flat}) == len(flat)
            r = await carol.post(
                "/api/v1/keys/alice/dec_keys",
                json={"key_IDs": [{"key_ID": k["key_ID"]} for k in flat]},
            )
            assert r.status_code == 200 and r.json()["keys"] == flat
        relays = _sent(net, "a", "b", EXT_KEYS)
        assert 1 <= relays < 16
        assert net.nodes["a"].counters["relays_delivered"] == relays
