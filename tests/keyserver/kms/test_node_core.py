"""Sans-I/O cores of the KMS node: link-key streams, store, relay messages, routing."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from keyserver.kms import linkstream
from keyserver.kms.heldkeys import KeysNotFound
from keyserver.kms.linkkeystore import Block, OutOfLinkKey, SliceUnavailable, Spend
from keyserver.kms.linkstream import SyncState, SyncVerdict
from keyserver.kms.nodestore import NodeStore
from keyserver.kms.relay import (
    AckStatus,
    RelayFormatError,
    RelayHeader,
    combine_shares,
    decode_hop,
    encode_hop,
    open_hop,
    seal,
    xor,
)
from keyserver.kms.relayjournal import FinalHop, FinalOutcome, RelayOut
from keyserver.kms.routing import (
    DownReason,
    LinkReport,
    LinkStateDb,
    Lsa,
    lsa_from_json,
    lsa_to_json,
)

LINK = "a-b"


def pair(tmp_path: Path) -> tuple[NodeStore, NodeStore]:
    a = NodeStore(tmp_path / "a", "a")
    b = NodeStore(tmp_path / "b", "b")
    for s in (a, b):
        s.link_keys.init_link(LINK, ("a", "b"))
    return a, b


def share_keys(a: NodeStore, b: NodeStore, n: int, size: int = 128, seq: int = 1) -> list[Block]:
    """What the transmitter (a) and receiver (b) do with n module keys."""
    owners = linkstream.assign_owners(
        n, {"a": a.link_keys.stock_bytes(LINK, "a"), "b": a.link_keys.stock_bytes(LINK, "b")}, size
    )
    blocks = [Block(uuid.uuid4(), o, os.urandom(size)) for o in owners]
    a.link_keys.add_pending(LINK, seq, blocks)
    b.link_keys.apply_announcement(LINK, seq, blocks)  # b fetched the same keys from its own module
    assert b.link_keys.announced(LINK, seq) == [x.key_id for x in blocks]
    a.link_keys.confirm(LINK, seq, [x.key_id for x in blocks])
    return blocks


def sync(s: NodeStore, me: str) -> SyncState:
    return SyncState(
        LINK,
        me,
        s.link_keys.announce_seq(LINK),
        (s.link_keys.view(LINK, "a"), s.link_keys.view(LINK, "b")),
    )


def test_streams_agree_and_slices_are_one_time(tmp_path: Path) -> None:
    a, b = pair(tmp_path)
    share_keys(a, b, 8)
    assert a.link_keys.stock_bytes(LINK, "a") == b.link_keys.stock_bytes(LINK, "a") == 512
    assert a.link_keys.stock_bytes(LINK, "b") == b.link_keys.stock_bytes(LINK, "b") == 512
    assert linkstream.compare(sync(a, "a"), sync(b, "b"), {}, "a").verdict is SyncVerdict.CONSISTENT
    [sl] = a.link_keys.spend([Spend(LINK, "a", 200)])  # crosses a block boundary
    assert b.link_keys.consume(LINK, "a", sl.start, 200) == sl.material
    with pytest.raises(SliceUnavailable):  # a replay finds its bytes used
        b.link_keys.consume(LINK, "a", sl.start, 200)
    with pytest.raises(SliceUnavailable):
        b.link_keys.consume(LINK, "a", sl.start + 100, 10)
    with pytest.raises(OutOfLinkKey):
        a.link_keys.spend([Spend(LINK, "a", 400)])
    assert a.link_keys.stock_bytes(LINK, "a") == 312 and b.link_keys.stock_bytes(LINK, "a") == 312
    # out of order consumption at the receiver, and the owner's cursor report erasing the rest
    s1, s2 = a.link_keys.spend([Spend(LINK, "a", 50), Spend(LINK, "a", 50)])
    assert b.link_keys.consume(LINK, "a", s2.start, 50) == s2.material
    b.link_keys.owner_cursor(LINK, "a", a.link_keys.view(LINK, "a").cursor)
    with pytest.raises(SliceUnavailable):
        b.link_keys.consume(LINK, "a", s1.start, 50)
    assert b.link_keys.stock_bytes(LINK, "a") == a.link_keys.stock_bytes(LINK, "a") == 212
    with pytest.raises(Exception, match="only its own"):
        a.link_keys.spend([Spend(LINK, "b", 1)])


def test_material_is_erased_from_the_file(tmp_path: Path) -> None:
    a, b = pair(tmp_path)
    blocks = share_keys(a, b, 4)
    mine = [x for x in blocks if x.owner == "a"]
    [sl] = a.link_keys.spend([Spend(LINK, "a", 128)])
    assert sl.material == mine[0].material
    raw = a.path.read_bytes()
    assert mine[0].material not in raw and mine[1].material in raw
    assert oct(a.path.stat().st_mode & 0o777) == "0o600"
    # no WAL; the rollback journal is truncated to nothing at commit
    files = list(a.path.parent.iterdir())
    assert not any(p.name.endswith(("-wal", "-shm")) for p in files)
    assert all(p.stat().st_size == 0 for p in files if p.name.endswith("-journal"))


def test_desync_detected_and_repaired(tmp_path: Path) -> None:
    a, b = pair(tmp_path)
    share_keys(a, b, 4)
    snapshot = (tmp_path / "b" / "node.sqlite3").read_bytes()
    share_keys(a, b, 4, seq=2)
    b.link_keys.spend([Spend(LINK, "b", 10)])
    b.close()
    (tmp_path / "b" / "node.sqlite3").write_bytes(snapshot)  # b restored from an old copy
    b = NodeStore(tmp_path / "b", "b")
    a.link_keys.owner_cursor(LINK, "b", 10)  # what b had reported before
    res = linkstream.compare(
        sync(a, "a"), sync(b, "b"), {"b": a.link_keys.max_cursor_seen(LINK, "b")}, "a"
    )
    assert res.verdict is SyncVerdict.DESYNC
    for owner, end in res.repair:
        a.link_keys.repair(LINK, owner, end)
        b.link_keys.repair(LINK, owner, end)
    a.link_keys.set_announce_seq(LINK, res.announce_seq)
    b.link_keys.set_announce_seq(LINK, res.announce_seq)
    assert linkstream.compare(sync(a, "a"), sync(b, "b"), {}, "a").verdict in (
        SyncVerdict.CONSISTENT,
        SyncVerdict.IN_FLIGHT,
    )
    assert (
        b.link_keys.view(LINK, "b").cursor >= 10
    )  # b never reuses what it spent before the restore
    assert a.link_keys.stock_bytes(LINK, "b") == b.link_keys.stock_bytes(LINK, "b") == 0


def header(route: tuple[str, ...], hop: int, n: int = 2, size: int = 32) -> RelayHeader:
    return RelayHeader(
        relay_id=uuid.uuid4(),
        key_ids=tuple(uuid.uuid4() for _ in range(n)),
        size=size,
        initiator_node=route[0],
        target_node=route[-1],
        initiator_sae="alice",
        target_sae="bob",
        route=route,
        hop=hop,
        leg=0,
        legs=1,
        link="x-y",
        pad_start=0,
        deadline_ms=10**13,
        ack_url="https://127.0.0.1:1/kmapi/v1/ext_keys/ack",
    )


def test_hop_message_is_otp_and_authenticated() -> None:
    h = header(("a", "b", "c"), 2)
    keys = [os.urandom(32), os.urandom(32)]
    sl = os.urandom(h.slice_length)
    m = seal(h, keys, sl)
    wire = encode_hop(m)
    back = decode_hop(wire)
    assert back == m
    assert open_hop(back, sl) == keys
    assert [xor(v, sl[i * 32 : (i + 1) * 32]) for i, v in enumerate(m.values or ())] == keys
    forged = decode_hop({**wire, "initiator_sae_id": "mallory"})
    with pytest.raises(RelayFormatError, match="MAC"):
        open_hop(forged, sl)
    h1 = header(("a", "b"), 1)
    with pytest.raises(RelayFormatError):
        decode_hop(
            {
                **encode_hop(seal(h1, None, os.urandom(h1.slice_length))),
                "keys": [{"key_id": str(k), "value": "AAAA"} for k in h1.key_ids],
            }
        )
    shares = [[os.urandom(8)], [os.urandom(8)]]
    assert combine_shares(shares) == [xor(shares[0][0], shares[1][0])]


def test_relay_records_and_voids(tmp_path: Path) -> None:
    a, b = pair(tmp_path)
    share_keys(a, b, 4)
    rid, kids = uuid.uuid4(), (uuid.uuid4(), uuid.uuid4())
    [sl] = a.begin_relay(
        RelayOut(rid, "alice", "bob", "b", kids, "pending", 10**13), [Spend(LINK, "a", 64 + 32)]
    )
    hop = FinalHop(
        rid,
        kids,
        0,
        1,
        "alice",
        "bob",
        "a",
        "https://x/ack",
        (sl.material[:32], sl.material[32:64]),
        10**13,
        10**13,
        10**6,
    )
    assert b.accept_leg((LINK, "a", sl.start, 96), hop) is FinalOutcome.COMPLETE
    [ack] = b.relays.acks_out()
    assert ack.status is AckStatus.RELAYED and ack.key_ids == kids
    with pytest.raises(KeysNotFound):
        b.held.take("mallory", "bob", kids)  # not yours == not there
    assert a.relays.deliver(rid) and not a.relays.void(rid, 0)
    got = b.held.take("alice", "bob", list(kids))
    assert [k.material for k in got] == [sl.material[:32], sl.material[32:64]]
    with pytest.raises(KeysNotFound):
        b.held.take("alice", "bob", list(kids))
    # a voided relay: the late leg is refused, the keys never appear
    rid2 = uuid.uuid4()
    [sl2] = a.begin_relay(
        RelayOut(rid2, "alice", "bob", "b", kids[:1], "pending", 10**13), [Spend(LINK, "a", 64)]
    )
    assert a.relays.void(rid2, 10**13)
    [v] = a.relays.voids_out()
    assert b.void_in(v.relay_id, v.until_ms) is AckStatus.KEY_NOT_PRESENT
    late = FinalHop(
        rid2,
        kids[:1],
        0,
        1,
        "alice",
        "bob",
        "a",
        "https://x/ack",
        (sl2.material[:32],),
        10**13,
        10**13,
        10**6,
    )
    assert b.accept_leg((LINK, "a", sl2.start, 64), late) is FinalOutcome.VOIDED
    assert b.held.count() == 0
    assert not a.relays.deliver(rid2)  # voiding: never delivered


def test_link_state_routes_around_and_names_broken_links() -> None:
    db = LinkStateDb(
        [("ab", "a", "b"), ("bd", "b", "d"), ("ac", "a", "c"), ("cd", "c", "d")],
        "abcd",
        max_age_s=5,
    )

    def rep(link: str, up: bool = True) -> LinkReport:
        return LinkReport(
            link, up, None if up else DownReason.EAVESDROPPER, not up, 0.02, 5e4, 10**5, "running"
        )

    for origin, links in {
        "a": ("ab", "ac"),
        "b": ("ab", "bd"),
        "c": ("ac", "cd"),
        "d": ("bd", "cd"),
    }.items():
        lsa = Lsa(origin, 1, tuple(rep(x) for x in links))
        assert lsa_from_json(lsa_to_json(lsa)) == lsa
        db.update(lsa, 0)
    two = db.routes("a", "d", 512, 2, 1)
    assert {r.nodes for r in two.routes} == {("a", "b", "d"), ("a", "c", "d")}
    assert db.update(Lsa("d", 2, (rep("bd", False), rep("cd"))), 1)
    assert not db.update(Lsa("d", 2, ()), 1)  # not newer
    assert db.routes("a", "d", 512, 1, 1).routes[0].nodes == ("a", "c", "d")
    none = db.routes("a", "d", 512, 2, 1)
    assert not none.ok and "bd (d: eavesdropper)" in none.broken_text()
    assert not db.routes("a", "d", 512, 1, 100).ok  # every LSA aged out
