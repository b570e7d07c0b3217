"""The node store as a whole: the on-disk format of a store written before the split opens, the
at-rest guarantees, and the operations that span parts are all or nothing."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from keyserver.etsi014.key import Key
from keyserver.kms.linkkeystore import OutOfLinkKey, SliceUnavailable, Spend
from keyserver.kms.linkstream import GENESIS
from keyserver.kms.nodestore import NodeStore
from keyserver.kms.relay import AckStatus
from keyserver.kms.relayjournal import FinalHop, FinalOutcome, RelayOut
from keyserver.kms.storedb import StoreError
from tests.keyserver.kms.test_node_core import LINK, pair, share_keys

FAR = 2**50  # a deadline or expiry that never comes in a test

# The schema as the store had it before it was split (and as stores on disk have it).
PRE_SPLIT_SCHEMA = """
CREATE TABLE streams (link TEXT NOT NULL, owner TEXT NOT NULL, end_pos INTEGER NOT NULL,
    cursor INTEGER NOT NULL, layout BLOB NOT NULL, max_cursor_seen INTEGER NOT NULL,
    PRIMARY KEY (link, owner));
CREATE TABLE blocks (link TEXT NOT NULL, owner TEXT NOT NULL, start INTEGER NOT NULL,
    key_id TEXT NOT NULL, material BLOB NOT NULL, spent BLOB NOT NULL, unspent INTEGER NOT NULL,
    PRIMARY KEY (link, owner, start));
CREATE TABLE pending (link TEXT NOT NULL, seq INTEGER NOT NULL, idx INTEGER NOT NULL,
    key_id TEXT NOT NULL, owner TEXT NOT NULL, material BLOB NOT NULL,
    PRIMARY KEY (link, seq, idx));
CREATE TABLE announce (link TEXT PRIMARY KEY, seq INTEGER NOT NULL, got TEXT NOT NULL);
CREATE TABLE relays_out (relay_id TEXT PRIMARY KEY, master TEXT NOT NULL, slave TEXT NOT NULL,
    target_node TEXT NOT NULL, key_ids TEXT NOT NULL, state TEXT NOT NULL,
    deadline_ms INTEGER NOT NULL);
CREATE TABLE void_out (relay_id TEXT PRIMARY KEY, target_node TEXT NOT NULL,
    key_ids TEXT NOT NULL, until_ms INTEGER NOT NULL);
CREATE TABLE shares (relay_id TEXT NOT NULL, leg INTEGER NOT NULL, legs INTEGER NOT NULL,
    material BLOB NOT NULL, deadline_ms INTEGER NOT NULL, PRIMARY KEY (relay_id, leg));
CREATE TABLE held (key_id TEXT PRIMARY KEY, relay_id TEXT NOT NULL, master TEXT NOT NULL,
    slave TEXT NOT NULL, initiator_node TEXT NOT NULL, material BLOB NOT NULL,
    expires_ms INTEGER NOT NULL);
CREATE INDEX held_pair ON held(master, slave);
CREATE TABLE ack_out (relay_id TEXT PRIMARY KEY, initiator_node TEXT NOT NULL,
    ack_url TEXT NOT NULL, key_ids TEXT NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL);
CREATE TABLE tombstones (relay_id TEXT PRIMARY KEY, until_ms INTEGER NOT NULL);
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def _pre_split_db(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path)
    db.execute("PRAGMA synchronous=OFF")  # a test file: no fsync per statement
    db.executescript("BEGIN;" + PRE_SPLIT_SCHEMA + "COMMIT;")
    return db


def _columns(path: Path) -> dict[str, list[tuple[str, str, int, int]]]:
    db = sqlite3.connect(f"file:{path}?immutable=1", uri=True)  # read while a store holds it
    try:
        names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {
            n: [(c[1], c[2], c[3], c[5]) for c in db.execute(f"PRAGMA table_info({n})")]
            for n in names
        }
    finally:
        db.close()


def test_a_store_written_before_the_split_opens_and_reads(tmp_path: Path) -> None:
    d = tmp_path / "old"
    d.mkdir()
    path = d / "node.sqlite3"
    kid, rid, held_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    old = _pre_split_db(path)
    old.execute("INSERT INTO meta VALUES ('node_id', 'a')")
    old.execute("INSERT INTO streams VALUES (?, 'a', 64, 0, ?, 0)", (LINK, GENESIS))
    old.execute(
        "INSERT INTO blocks VALUES (?, 'a', 0, ?, ?, ?, 64)",
        (LINK, str(kid), b"k" * 64, bytes(8)),
    )
    old.execute(
        "INSERT INTO relays_out VALUES (?, 'alice', 'bob', 'c', ?, 'pending', ?)",
        (str(rid), f'["{kid}"]', FAR),
    )
    old.execute(
        "INSERT INTO held VALUES (?, ?, 'carol', 'alice', 'b', ?, ?)",
        (str(held_id), str(uuid.uuid4()), b"h" * 32, FAR),
    )
    old.commit()
    old.close()
    before = _columns(path)
    os.chmod(path, 0o644)

    store = NodeStore(d, "a")
    try:
        assert _columns(path) == before  # opening changes no table
        assert oct(path.stat().st_mode & 0o777) == "0o600"
        assert store.link_keys.stock_bytes(LINK, "a") == 64
        [sl] = store.link_keys.spend([Spend(LINK, "a", 16)])
        assert (sl.start, sl.material) == (0, b"k" * 16)
        assert store.relays.state(rid) == "pending" and store.relays.deliver(rid)
        assert store.held.take("carol", "alice", [held_id]) == [Key.of(held_id, b"h" * 32)]
    finally:
        store.close()
    with pytest.raises(StoreError, match="belongs to node 'a'"):
        NodeStore(d, "b")


def test_a_new_store_has_the_pre_split_tables(tmp_path: Path) -> None:
    NodeStore(tmp_path / "new", "a").close()
    ref = tmp_path / "ref.sqlite3"
    _pre_split_db(ref).close()
    assert _columns(tmp_path / "new" / "node.sqlite3") == _columns(ref)


def test_one_store_per_directory(tmp_path: Path) -> None:
    first = NodeStore(tmp_path / "a", "a")
    try:
        with pytest.raises(StoreError, match="in use by another node process"):
            NodeStore(tmp_path / "a", "a")
    finally:
        first.close()
    NodeStore(tmp_path / "a", "a").close()  # free again once closed


_KILLED_CHILD = """
import sys, time
from pathlib import Path
from keyserver.kms.linkkeystore import Spend
from keyserver.kms.nodestore import NodeStore
store = NodeStore(Path(sys.argv[1]), "a")
[sl] = store.link_keys.spend([Spend(sys.argv[2], "a", 100)])  # committed
print(sl.start, flush=True)
with store.transaction():
    store.link_keys.spend([Spend(sys.argv[2], "a", 100)])
    print("in a transaction", flush=True)
    time.sleep(60)
"""


def test_a_store_killed_in_a_transaction_reopens_with_every_commit(tmp_path: Path) -> None:
    """The store holds its file's lock for good (locking_mode EXCLUSIVE): nothing else reads it
    while it is open; SIGKILLed in the middle of a transaction, it leaves a journal that the
    next open rolls back: the committed spend stays spent, the other never happened."""
    a, b = pair(tmp_path)
    share_keys(a, b, 8)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        sqlite3.connect(a.path, timeout=0).execute("SELECT COUNT(*) FROM blocks").fetchone()
    a.close()
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_CHILD, str(tmp_path / "a"), LINK],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        first = int(child.stdout.readline())
        assert child.stdout.readline() == "in a transaction\n"
        journal = a.path.with_name(a.path.name + "-journal")
        assert journal.stat().st_size > 0  # the open transaction's undo pages
    finally:
        child.kill()
        child.wait(10)
    again = NodeStore(tmp_path / "a", "a")
    try:
        [sl] = again.link_keys.spend([Spend(LINK, "a", 100)])
        assert sl.start == first + 100  # the slice of the rolled-back spend, handed out once
        assert sl.material == b.link_keys.consume(LINK, "a", sl.start, 100)
        assert journal.stat().st_size == 0
    finally:
        again.close()
        b.close()


def test_delivered_and_voided_keys_leave_the_file(tmp_path: Path) -> None:
    """secure_delete and the rollback journal hold for every part: a key taken by the slave SAE,
    or voided by the initiator, is not in any file of the store after its transaction."""
    store = NodeStore(tmp_path / "s", "s")
    try:
        taken, voided, kept = (Key.of(uuid.uuid4(), os.urandom(32)) for _ in range(3))
        store.held.issue_local("alice", "bob", [taken, kept], FAR)
        rid = uuid.uuid4()
        store.held.hold(rid, "alice", "bob", "x", [voided], FAR)
        store.held.take("alice", "bob", [taken.key_id])
        assert store.void_in(rid, FAR) is AckStatus.VOIDED
        files = list(store.path.parent.iterdir())
        raw = b"".join(p.read_bytes() for p in files if p.is_file())
        assert taken.material not in raw and voided.material not in raw
        assert kept.material in raw  # the search would find a key that is there
        # no WAL; the rollback journal is truncated to nothing at commit
        assert not any(p.name.endswith(("-wal", "-shm")) for p in files)
        assert all(p.stat().st_size == 0 for p in files if p.name.endswith("-journal"))
    finally:
        store.close()


def _hop(
    rid: uuid.UUID, kids: tuple[uuid.UUID, ...], shares: tuple[bytes, ...], **kw: int
) -> FinalHop:
    return FinalHop(
        rid,
        kids,
        kw.get("leg", 0),
        kw.get("legs", 1),
        "alice",
        "bob",
        "a",
        "https://a/ack",
        shares,
        FAR,
        FAR,
        kw.get("quota_bits", 10**6),
    )


def test_begin_relay_spends_and_records_or_does_neither(tmp_path: Path) -> None:
    a, b = pair(tmp_path)
    share_keys(a, b, 8)
    rid, kids = uuid.uuid4(), (uuid.uuid4(),)
    r = RelayOut(rid, "alice", "bob", "b", kids, "pending", FAR)
    a.begin_relay(r, [Spend(LINK, "a", 64)])
    cursor, stock, tx = (
        a.link_keys.view(LINK, "a").cursor,
        a.link_keys.stock_bytes(LINK, "a"),
        a.transactions,
    )
    with pytest.raises(sqlite3.IntegrityError):  # the record fails: the spend is undone with it
        a.begin_relay(r, [Spend(LINK, "a", 64)])
    assert a.link_keys.view(LINK, "a").cursor == cursor
    assert a.link_keys.stock_bytes(LINK, "a") == stock and a.transactions == tx
    rid2 = uuid.uuid4()
    with pytest.raises(OutOfLinkKey):  # the spend fails: nothing is recorded
        a.begin_relay(
            RelayOut(rid2, "alice", "bob", "b", kids, "pending", FAR), [Spend(LINK, "a", 10**6)]
        )
    assert a.relays.state(rid2) is None and a.relays.pending_count() == 1


def test_accept_leg_is_all_or_nothing_across_link_key_and_held_keys(tmp_path: Path) -> None:
    a, b = pair(tmp_path)
    share_keys(a, b, 8)
    kid = uuid.uuid4()
    b.held.issue_local("alice", "bob", [Key.of(kid, bytes(32))], FAR)  # the key ID is taken
    [sl] = a.link_keys.spend([Spend(LINK, "a", 64)])
    incoming = (LINK, "a", sl.start, 64)
    with pytest.raises(sqlite3.IntegrityError):  # holding fails: the slice is not consumed
        b.accept_leg(incoming, _hop(uuid.uuid4(), (kid,), (sl.material[:32],)))
    assert b.link_keys.peek(*incoming) == sl.material
    assert b.held.count() == 1 and b.relays.acks_out() == []
    rid, kid2 = uuid.uuid4(), uuid.uuid4()
    hop = _hop(rid, (kid2,), (sl.material[:32],))
    assert b.accept_leg(incoming, hop) is FinalOutcome.COMPLETE
    with pytest.raises(SliceUnavailable):
        b.link_keys.peek(*incoming)
    [ack] = b.relays.acks_out()
    assert (ack.relay_id, ack.status) == (rid, AckStatus.RELAYED)
    assert b.accept_leg(None, hop) is FinalOutcome.COMPLETE  # a repeated leg changes nothing
    assert b.held.count() == 2 and len(b.relays.acks_out()) == 1


def test_legs_are_combined_once_all_are_in(tmp_path: Path) -> None:
    store = NodeStore(tmp_path / "t", "t")
    try:
        rid, kids = uuid.uuid4(), (uuid.uuid4(), uuid.uuid4())
        s0, s1 = (os.urandom(32), os.urandom(32)), (os.urandom(32), os.urandom(32))
        assert store.accept_leg(None, _hop(rid, kids, s0, leg=0, legs=2)) is FinalOutcome.PARTIAL
        assert store.held.count() == 0
        assert store.accept_leg(None, _hop(rid, kids, s1, leg=1, legs=2)) is FinalOutcome.COMPLETE
        got = store.held.take("alice", "bob", list(kids))
        assert [bytes(k.material) for k in got] == [
            bytes(x ^ y for x, y in zip(s0[i], s1[i], strict=True)) for i in range(2)
        ]
    finally:
        store.close()


def test_over_quota_the_relay_is_refused_for_good(tmp_path: Path) -> None:
    store = NodeStore(tmp_path / "t", "t")
    try:
        rid, kids = uuid.uuid4(), (uuid.uuid4(),)
        hop = _hop(rid, kids, (os.urandom(32),), quota_bits=255)
        assert store.accept_leg(None, hop) is FinalOutcome.QUOTA
        [ack] = store.relays.acks_out()
        assert ack.status is AckStatus.FAILED and "quota" in ack.reason
        assert store.held.count() == 0
        assert store.accept_leg(None, _hop(rid, kids, (os.urandom(32),))) is FinalOutcome.VOIDED
    finally:
        store.close()


def test_void_in_drops_held_keys_and_partial_legs_and_refuses_the_rest(tmp_path: Path) -> None:
    store = NodeStore(tmp_path / "t", "t")
    try:
        rid, kids = uuid.uuid4(), (uuid.uuid4(),)
        assert (
            store.accept_leg(None, _hop(rid, kids, (os.urandom(32),), legs=2))
            is FinalOutcome.PARTIAL
        )
        assert store.void_in(rid, FAR) is AckStatus.VOIDED
        leg1 = _hop(rid, kids, (os.urandom(32),), leg=1, legs=2)
        assert store.accept_leg(None, leg1) is FinalOutcome.VOIDED
        assert store.void_in(uuid.uuid4(), FAR) is AckStatus.KEY_NOT_PRESENT
        assert store.held.count() == 0
    finally:
        store.close()


def test_expire_is_one_transaction_over_held_keys_and_relay_records(tmp_path: Path) -> None:
    store = NodeStore(tmp_path / "t", "t")
    try:
        old, new = Key.of(uuid.uuid4(), b"o" * 32), Key.of(uuid.uuid4(), b"n" * 32)
        rid = uuid.uuid4()
        store.held.hold(rid, "alice", "bob", "x", [old], 1_000)
        store.held.hold(uuid.uuid4(), "alice", "bob", "x", [new], FAR)
        stale = uuid.uuid4()
        store.begin_relay(RelayOut(stale, "alice", "bob", "y", (uuid.uuid4(),), "pending", 0), [])
        tx = store.transactions
        assert store.expire(10**6) == [(rid, "x", (old.key_id,))]
        assert store.transactions == tx + 1
        assert store.held.count() == 1 and store.relays.state(stale) is None
    finally:
        store.close()


def test_callers_compose_parts_in_one_transaction(tmp_path: Path) -> None:
    store = NodeStore(tmp_path / "t", "t")
    try:
        with pytest.raises(RuntimeError), store.transaction():
            store.held.issue_local("alice", "bob", [Key.of(uuid.uuid4(), bytes(32))], FAR)
            raise RuntimeError("the caller's next step fails")
        assert store.held.count() == 0
    finally:
        store.close()


def test_take_keys_direct_and_held_all_or_none_and_once(tmp_path: Path) -> None:
    """dec_keys at the slave's node: direct keys (a's stream, kms/directkey.py) and held keys
    together in one transaction; a wrong binding, a used slice or an unknown held ID changes
    nothing; each is delivered once; the delayed erasure keeps a slice below the cursor."""
    from keyserver.kms import directkey
    from keyserver.kms.directkey import Binding
    from keyserver.kms.heldkeys import KeysNotFound

    a, b = pair(tmp_path)
    share_keys(a, b, 8)
    bind = Binding("a", LINK, "alice", "bob")
    slices = a.link_keys.spend([Spend(LINK, "a", directkey.slice_length(32))] * 2)
    issued = [directkey.issue(bind, s.start, s.material) for s in slices]
    held = Key.of(uuid.uuid4(), os.urandom(32))
    b.held.issue_local("alice", "bob", [held], FAR)
    # the owner reports its cursor past both slices; b erases only below an older report
    cursor = a.link_keys.view(LINK, "a").cursor
    b.link_keys.owner_cursor(LINK, "a", cursor, erase_below=0)

    def claims(ids: list[uuid.UUID], who: Binding = bind) -> dict:
        refs = {k: directkey.decode_id(k) for k in ids}
        return {k: (who, r) for k, r in refs.items() if r is not None}

    ids = [kid for kid, _ in issued]
    stock = b.link_keys.stock_bytes(LINK, "a")
    with pytest.raises(KeysNotFound):  # the tag binds bob: dave cannot take it
        b.take_keys("alice", "dave", ids[:1], claims(ids[:1], Binding("a", LINK, "alice", "dave")))
    with pytest.raises(KeysNotFound):  # one unknown ID: none is taken
        b.take_keys("alice", "bob", [ids[0], held.key_id, uuid.uuid4()], claims(ids[:1]))
    assert b.link_keys.stock_bytes(LINK, "a") == stock and b.held.count() == 1
    got = b.take_keys("alice", "bob", [held.key_id, ids[0]], claims(ids[:1]))
    assert [bytes(k.material) for k in got] == [bytes(held.material), issued[0][1]]
    with pytest.raises(KeysNotFound):  # delivered once
        b.take_keys("alice", "bob", ids[:1], claims(ids[:1]))
    # an erasure below the cursor (hold_seconds later) takes what was never collected
    b.link_keys.owner_cursor(LINK, "a", cursor)
    with pytest.raises(KeysNotFound):
        b.take_keys("alice", "bob", ids[1:], claims(ids[1:]))
