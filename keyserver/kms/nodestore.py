"""A KMS node's persistent store (SQLite): link-key streams, relay records, held keys, outboxes.

Every public method is one atomic transaction, so a SIGKILL at any moment leaves either all or
nothing of an operation. Link-key semantics are those of :mod:`keyserver.kms.linkstream`; relay
semantics those of :mod:`keyserver.kms.relay` and docs/network.md.

Erasure: the database runs in rollback-journal mode (``journal_mode=DELETE``) with
``secure_delete=ON``: a spent or delivered key is overwritten in place in the database file
within the transaction that spends it, and the journal holding the old page is deleted at
commit, so key material leaves every file at once; ``temp_store=MEMORY``: no temporary
file. Files are created 0600. The directory is
locked (flock) so two processes never share a store. ``synchronous`` is ``OFF`` by default
(safe against a process crash, not against power loss; ``FULL`` is safe against both).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Literal

from keyserver.kms.linkstream import GENESIS, StreamView, extend_layout, repaired_layout
from keyserver.kms.relay import AckStatus

_SCHEMA = """
CREATE TABLE IF NOT EXISTS streams (
    link TEXT NOT NULL, owner TEXT NOT NULL,
    end_pos INTEGER NOT NULL, cursor INTEGER NOT NULL, layout BLOB NOT NULL,
    max_cursor_seen INTEGER NOT NULL,
    PRIMARY KEY (link, owner)
);
CREATE TABLE IF NOT EXISTS blocks (
    link TEXT NOT NULL, owner TEXT NOT NULL, start INTEGER NOT NULL,
    key_id TEXT NOT NULL, material BLOB NOT NULL, spent BLOB NOT NULL, unspent INTEGER NOT NULL,
    PRIMARY KEY (link, owner, start)
);
CREATE TABLE IF NOT EXISTS pending (
    link TEXT NOT NULL, seq INTEGER NOT NULL, idx INTEGER NOT NULL,
    key_id TEXT NOT NULL, owner TEXT NOT NULL, material BLOB NOT NULL,
    PRIMARY KEY (link, seq, idx)
);
CREATE TABLE IF NOT EXISTS announce (
    link TEXT PRIMARY KEY, seq INTEGER NOT NULL, got TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS relays_out (
    relay_id TEXT PRIMARY KEY, master TEXT NOT NULL, slave TEXT NOT NULL,
    target_node TEXT NOT NULL, key_ids TEXT NOT NULL, state TEXT NOT NULL,
    deadline_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS void_out (
    relay_id TEXT PRIMARY KEY, target_node TEXT NOT NULL, key_ids TEXT NOT NULL,
    until_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS shares (
    relay_id TEXT NOT NULL, leg INTEGER NOT NULL, legs INTEGER NOT NULL,
    material BLOB NOT NULL, deadline_ms INTEGER NOT NULL,
    PRIMARY KEY (relay_id, leg)
);
CREATE TABLE IF NOT EXISTS held (
    key_id TEXT PRIMARY KEY, relay_id TEXT NOT NULL, master TEXT NOT NULL, slave TEXT NOT NULL,
    initiator_node TEXT NOT NULL, material BLOB NOT NULL, expires_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS held_pair ON held(master, slave);
CREATE TABLE IF NOT EXISTS ack_out (
    relay_id TEXT PRIMARY KEY, initiator_node TEXT NOT NULL, ack_url TEXT NOT NULL,
    key_ids TEXT NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tombstones (
    relay_id TEXT PRIMARY KEY, until_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class StoreError(Exception):
    """Base class of node store errors."""


class SliceUnavailable(StoreError):
    """Referenced link-key bytes are not held or were already used (a replay or a desync)."""


class OutOfLinkKey(StoreError):
    """The node's own stream on a link holds less than needed."""

    def __init__(self, link: str, need: int, have: int) -> None:
        super().__init__(f"link {link}: {have} bytes of key, {need} needed")
        self.link, self.need, self.have = link, need, have


class KeysNotFound(StoreError):
    """Key IDs not held for this SAE pair (unknown, delivered, or someone else's: same answer)."""


@dataclass(frozen=True)
class Block:
    key_id: uuid.UUID
    owner: str
    material: bytes


@dataclass(frozen=True)
class Spend:
    link: str
    owner: str
    nbytes: int


@dataclass(frozen=True)
class Slice:
    link: str
    owner: str
    start: int
    material: bytes


@dataclass(frozen=True)
class HeldKey:
    key_id: uuid.UUID
    material: bytes


@dataclass(frozen=True)
class RelayOut:
    relay_id: uuid.UUID
    master: str
    slave: str
    target_node: str
    key_ids: tuple[uuid.UUID, ...]
    state: Literal["pending", "voiding"]
    deadline_ms: int


@dataclass(frozen=True)
class VoidOut:
    relay_id: uuid.UUID
    target_node: str
    key_ids: tuple[uuid.UUID, ...]
    until_ms: int


@dataclass(frozen=True)
class AckOut:
    relay_id: uuid.UUID
    initiator_node: str
    ack_url: str
    key_ids: tuple[uuid.UUID, ...]
    status: AckStatus
    reason: str


@dataclass(frozen=True)
class FinalHop:
    """What the target node stores when the last hop of one leg arrives."""

    relay_id: uuid.UUID
    key_ids: tuple[uuid.UUID, ...]
    leg: int
    legs: int
    master: str
    slave: str
    initiator_node: str
    ack_url: str
    shares: tuple[bytes, ...]
    deadline_ms: int
    expires_ms: int
    quota_bits: int  # most key bits held for one (master, slave) pair
    # the leg came straight from the initiator, so the reply to it is the ack: nothing queued
    ack_in_reply: bool = False


class FinalOutcome(Enum):
    COMPLETE = "complete"  # every leg is in: the keys are held for the slave, ack queued
    PARTIAL = "partial"  # this leg is stored, others are missing
    VOIDED = "voided"  # the relay was voided before this leg arrived
    QUOTA = "quota"  # the pair holds too much uncollected key


def _ids(raw: str) -> tuple[uuid.UUID, ...]:
    return tuple(uuid.UUID(x) for x in json.loads(raw))


def _ids_json(ids: Sequence[uuid.UUID]) -> str:
    return json.dumps([str(k) for k in ids])


def _mask(lo: int, hi: int) -> int:
    return ((1 << (hi - lo)) - 1) << lo


class NodeStore:
    def __init__(
        self,
        data_dir: Path,
        node_id: str,
        *,
        synchronous: Literal["OFF", "NORMAL", "FULL"] = "OFF",
    ) -> None:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.node_id = node_id
        self._lock_fd = os.open(data_dir / "node.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise StoreError(
                f"{data_dir} is in use by another node process; stop it or use another data_dir"
            ) from None
        path = data_dir / "node.sqlite3"
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(path, 0o600)
        self.path = path
        # unspent bytes per (link, owner) stream, kept in step with the blocks table by every
        # write (dropped on a rollback): a relay asks for it several times per request
        self._stock: dict[tuple[str, str], int] = {}
        self.transactions = 0  # write transactions committed (benchmarks and tests count them)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=DELETE")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.execute("PRAGMA temp_store=MEMORY")  # no temporary file ever holds key
        self._db.executescript(_SCHEMA)
        with self._tx():
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('node_id', ?)", (node_id,))
        row = self._db.execute("SELECT value FROM meta WHERE name='node_id'").fetchone()
        if row[0] != node_id:
            self.close()
            raise StoreError(f"{data_dir} belongs to node {row[0]!r}, not {node_id!r}")

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            self._stock.clear()
            raise
        self._db.execute("COMMIT")
        self.transactions += 1

    # -- streams -----------------------------------------------------------------------------
    def init_link(self, link: str, owners: Sequence[str]) -> None:
        with self._tx():
            for o in owners:
                self._db.execute(
                    "INSERT OR IGNORE INTO streams VALUES (?, ?, 0, 0, ?, 0)", (link, o, GENESIS)
                )

    def view(self, link: str, owner: str) -> StreamView:
        end, cursor, layout, _ = self._stream(link, owner)
        return StreamView(owner, end, bytes(layout), cursor)

    def max_cursor_seen(self, link: str, owner: str) -> int:
        return self._stream(link, owner)[3]

    def _stream(self, link: str, owner: str) -> tuple[int, int, bytes, int]:
        row = self._db.execute(
            "SELECT end_pos, cursor, layout, max_cursor_seen FROM streams WHERE link=? AND owner=?",
            (link, owner),
        ).fetchone()
        if row is None:
            raise StoreError(f"link {link} has no stream owned by {owner}")
        return int(row[0]), int(row[1]), bytes(row[2]), int(row[3])

    def stock_bytes(self, link: str, owner: str) -> int:
        """Unspent bytes of `owner`'s stream on `link` in this store."""
        n = self._stock.get((link, owner))
        if n is None:
            row = self._db.execute(
                "SELECT COALESCE(SUM(unspent), 0) FROM blocks WHERE link=? AND owner=?",
                (link, owner),
            ).fetchone()
            n = self._stock[(link, owner)] = int(row[0])
        return n

    def _stock_add(self, link: str, owner: str, delta: int) -> None:
        if (link, owner) in self._stock:
            self._stock[(link, owner)] += delta

    def _append(self, link: str, block: Block) -> None:
        end, _, layout, _ = self._stream(link, block.owner)
        n = len(block.material)
        self._db.execute(
            "INSERT INTO blocks VALUES (?, ?, ?, ?, ?, ?, ?)",
            (link, block.owner, end, str(block.key_id), block.material, bytes((n + 7) // 8), n),
        )
        self._db.execute(
            "UPDATE streams SET end_pos=?, layout=? WHERE link=? AND owner=?",
            (end + n, extend_layout(layout, end, n, block.key_id), link, block.owner),
        )
        self._stock_add(link, block.owner, n)

    # -- drawing (transmitter side) ----------------------------------------------------------
    def next_announce_seq(self, link: str) -> int:
        row = self._db.execute("SELECT MAX(seq) FROM pending WHERE link=?", (link,)).fetchone()
        top = self.announce_seq(link)
        return max(top, int(row[0]) if row[0] is not None else 0) + 1

    def add_pending(self, link: str, seq: int, blocks: Sequence[Block]) -> None:
        with self._tx():
            self._db.executemany(
                "INSERT INTO pending VALUES (?, ?, ?, ?, ?, ?)",
                [(link, seq, i, str(b.key_id), b.owner, b.material) for i, b in enumerate(blocks)],
            )

    def pending(self, link: str) -> list[tuple[int, list[Block]]]:
        out: dict[int, list[Block]] = {}
        for seq, kid, owner, mat in self._db.execute(
            "SELECT seq, key_id, owner, material FROM pending WHERE link=? ORDER BY seq, idx",
            (link,),
        ):
            out.setdefault(int(seq), []).append(Block(uuid.UUID(kid), owner, bytes(mat)))
        return sorted(out.items())

    def confirm(self, link: str, seq: int, got: Sequence[uuid.UUID]) -> int:
        """The receiver-side node holds `got` of announcement `seq`: append them; erase the rest.

        Returns the number of blocks appended (0 if `seq` was already confirmed).
        """
        got_set = set(got)
        with self._tx():
            rows = self._db.execute(
                "SELECT key_id, owner, material FROM pending WHERE link=? AND seq=? ORDER BY idx",
                (link, seq),
            ).fetchall()
            n = 0
            for kid, owner, mat in rows:
                if uuid.UUID(kid) in got_set:
                    self._append(link, Block(uuid.UUID(kid), owner, bytes(mat)))
                    n += 1
            self._db.execute("DELETE FROM pending WHERE link=? AND seq=?", (link, seq))
            self._set_announce(link, seq, got)
        return n

    def set_announce_seq(self, link: str, seq: int) -> None:
        """After a repair: continue from announcement `seq`; no stored answer is replayed."""
        with self._tx():
            self._db.execute(
                "INSERT INTO announce VALUES (?, ?, '[]') ON CONFLICT(link) DO UPDATE SET "
                "seq=excluded.seq, got='[]'",
                (link, seq),
            )

    def announce_seq(self, link: str) -> int:
        row = self._db.execute("SELECT seq FROM announce WHERE link=?", (link,)).fetchone()
        return 0 if row is None else int(row[0])

    def _set_announce(self, link: str, seq: int, got: Sequence[uuid.UUID]) -> None:
        self._db.execute(
            "INSERT INTO announce VALUES (?, ?, ?) ON CONFLICT(link) DO UPDATE SET "
            "seq=MAX(seq, excluded.seq), got=excluded.got",
            (link, seq, _ids_json(got)),
        )

    # -- receiving announcements (receiver side) ---------------------------------------------
    def announced(self, link: str, seq: int) -> list[uuid.UUID] | None:
        """The answer already given to announcement `seq`, if it is the last one applied."""
        row = self._db.execute("SELECT seq, got FROM announce WHERE link=?", (link,)).fetchone()
        if row is None or int(row[0]) != seq:
            return None
        return list(_ids(row[1]))

    def apply_announcement(self, link: str, seq: int, blocks: Sequence[Block]) -> None:
        with self._tx():
            for b in blocks:
                self._append(link, b)
            self._set_announce(link, seq, [b.key_id for b in blocks])

    # -- spending and consuming --------------------------------------------------------------
    def _collect(
        self, link: str, owner: str, start: int, length: int
    ) -> tuple[bytes, list[tuple[bytes, bytes, int, int]], list[int]]:
        """Bytes [start, start+length) of a stream, all unspent (else SliceUnavailable), and the
        block updates and deletions that spend them; reads only."""
        if length <= 0:
            raise SliceUnavailable("empty slice")
        stop = start + length
        first = self._db.execute(  # the block holding `start` (blocks never overlap)
            "SELECT MAX(start) FROM blocks WHERE link=? AND owner=? AND start <= ?",
            (link, owner, start),
        ).fetchone()[0]
        rows = [
            r
            for r in self._db.execute(
                "SELECT start, material, spent, unspent FROM blocks WHERE link=? AND owner=? "
                "AND start >= ? AND start < ? ORDER BY start",
                (link, owner, start if first is None else int(first), stop),
            ).fetchall()
            if int(r[0]) + len(r[1]) > start
        ]
        parts: list[bytes] = []
        pos = start
        updates: list[tuple[bytes, bytes, int, int]] = []
        deletes: list[int] = []
        for bstart, mat, spent, unspent in rows:
            bstart = int(bstart)
            mat = bytes(mat)
            if bstart > pos:
                raise SliceUnavailable(f"link {link}: bytes {pos}..{bstart} are not held")
            lo, hi = pos - bstart, min(len(mat), stop - bstart)
            bm = int.from_bytes(spent, "little")
            mask = _mask(lo, hi)
            if bm & mask:
                raise SliceUnavailable(f"link {link}: bytes from {pos} were already used")
            parts.append(mat[lo:hi])
            left = int(unspent) - (hi - lo)
            if left == 0:
                deletes.append(bstart)
            else:
                zeroed = mat[:lo] + bytes(hi - lo) + mat[hi:]
                updates.append((zeroed, (bm | mask).to_bytes(len(spent), "little"), left, bstart))
            pos = bstart + hi
        if pos < stop:
            raise SliceUnavailable(f"link {link}: bytes {pos}..{stop} are not held")
        return b"".join(parts), updates, deletes

    def _take(self, link: str, owner: str, start: int, length: int) -> bytes:
        """Bytes [start, start+length) of a stream, all unspent: read, erase, mark spent."""
        material, updates, deletes = self._collect(link, owner, start, length)
        for zeroed, bm_bytes, left, bstart in updates:
            self._db.execute(
                "UPDATE blocks SET material=?, spent=?, unspent=? WHERE link=? AND owner=? "
                "AND start=?",
                (zeroed, bm_bytes, left, link, owner, bstart),
            )
        for bstart in deletes:
            self._db.execute(
                "DELETE FROM blocks WHERE link=? AND owner=? AND start=?", (link, owner, bstart)
            )
        self._stock_add(link, owner, -length)
        return material

    def _spend(self, s: Spend) -> Slice:
        if s.owner != self.node_id:
            raise StoreError("a node spends only its own streams")
        end, cursor, _, _ = self._stream(s.link, s.owner)
        held = self._db.execute(  # the block holding the cursor, if any (index seeks only)
            "SELECT start + LENGTH(material) FROM blocks WHERE link=? AND owner=? AND start <= ? "
            "ORDER BY start DESC LIMIT 1",
            (s.link, s.owner, cursor),
        ).fetchone()
        if held is not None and int(held[0]) > cursor:
            start = cursor
        else:
            row = self._db.execute(
                "SELECT MIN(start) FROM blocks WHERE link=? AND owner=? AND start > ?",
                (s.link, s.owner, cursor),
            ).fetchone()
            start = cursor if row[0] is None else int(row[0])
        if end - start < s.nbytes:
            raise OutOfLinkKey(s.link, s.nbytes, max(0, end - start))
        material = self._take(s.link, s.owner, start, s.nbytes)
        self._db.execute(
            "UPDATE streams SET cursor=? WHERE link=? AND owner=?",
            (start + s.nbytes, s.link, s.owner),
        )
        return Slice(s.link, s.owner, start, material)

    def spend(self, spends: Sequence[Spend]) -> list[Slice]:
        with self._tx():
            return [self._spend(s) for s in spends]

    def consume(self, link: str, owner: str, start: int, length: int) -> bytes:
        with self._tx():
            return self._take(link, owner, start, length)

    def peek(self, link: str, owner: str, start: int, length: int) -> bytes:
        """The bytes of a slice without spending them (to check a MAC first); raises if used."""
        return self._collect(link, owner, start, length)[0]

    def forward(self, incoming: tuple[str, str, int, int], out: Spend) -> tuple[bytes, Slice]:
        """Intermediate hop: consume the incoming slice and spend the next link's, atomically."""
        with self._tx():
            got = self._take(*incoming)
            return got, self._spend(out)

    def burn(self, link: str, owner: str, start: int, length: int) -> None:
        """Mark a slice used without returning it (a message whose MAC failed)."""
        with self._tx(), contextlib.suppress(SliceUnavailable):
            self._take(link, owner, start, length)

    def owner_cursor(self, link: str, owner: str, cursor: int) -> None:
        """The owner reports its cursor: everything below it is spent or abandoned; erase it."""
        with self._tx():
            self._stream(link, owner)  # raises if unknown
            self._stock.pop((link, owner), None)
            self._db.execute(
                "UPDATE streams SET cursor=MAX(cursor, ?), max_cursor_seen=MAX(max_cursor_seen, ?) "
                "WHERE link=? AND owner=?",
                (cursor, cursor, link, owner),
            )
            for bstart, mat in self._db.execute(
                "SELECT start, material FROM blocks WHERE link=? AND owner=? AND start < ?",
                (link, owner, cursor),
            ).fetchall():
                bstart = int(bstart)
                if bstart + len(mat) <= cursor:
                    self._db.execute(
                        "DELETE FROM blocks WHERE link=? AND owner=? AND start=?",
                        (link, owner, bstart),
                    )
                else:
                    self._erase_range(link, owner, bstart, bytes(mat), cursor - bstart)

    def _erase_range(self, link: str, owner: str, bstart: int, mat: bytes, upto: int) -> None:
        row = self._db.execute(
            "SELECT spent FROM blocks WHERE link=? AND owner=? AND start=?", (link, owner, bstart)
        ).fetchone()
        bm = int.from_bytes(row[0], "little") | _mask(0, upto)
        unspent = len(mat) - bin(bm).count("1")
        self._db.execute(
            "UPDATE blocks SET material=?, spent=?, unspent=? WHERE link=? AND owner=? AND start=?",
            (
                bytes(upto) + mat[upto:],
                bm.to_bytes(len(row[0]), "little"),
                unspent,
                link,
                owner,
                bstart,
            ),
        )

    def repair(self, link: str, owner: str, new_end: int) -> None:
        """Desync repair: erase the stream and restart it at `new_end` (both sides do the same)."""
        with self._tx():
            end, cursor, _, seen = self._stream(link, owner)
            self._stock.pop((link, owner), None)
            new_end = max(new_end, end, cursor)
            self._db.execute("DELETE FROM blocks WHERE link=? AND owner=?", (link, owner))
            self._db.execute(
                "UPDATE streams SET end_pos=?, cursor=?, layout=?, max_cursor_seen=? "
                "WHERE link=? AND owner=?",
                (new_end, new_end, repaired_layout(new_end), max(seen, new_end), link, owner),
            )

    # -- relays this node initiated ----------------------------------------------------------
    def begin_relay(self, r: RelayOut, spends: Sequence[Spend]) -> list[Slice]:
        with self._tx():
            slices = [self._spend(s) for s in spends]
            self._db.execute(
                "INSERT INTO relays_out VALUES (?, ?, ?, ?, ?, 'pending', ?)",
                (
                    str(r.relay_id),
                    r.master,
                    r.slave,
                    r.target_node,
                    _ids_json(r.key_ids),
                    r.deadline_ms,
                ),
            )
            return slices

    def relay_state(self, relay_id: uuid.UUID) -> str | None:
        row = self._db.execute(
            "SELECT state FROM relays_out WHERE relay_id=?", (str(relay_id),)
        ).fetchone()
        return None if row is None else str(row[0])

    def deliver_relay(self, relay_id: uuid.UUID) -> bool:
        """pending -> delivered (row gone); False if it is no longer pending (voided)."""
        with self._tx():
            cur = self._db.execute(
                "DELETE FROM relays_out WHERE relay_id=? AND state='pending'", (str(relay_id),)
            )
            return cur.rowcount == 1

    def void_relay(self, relay_id: uuid.UUID, until_ms: int) -> bool:
        """pending -> voiding, with a void queued for the target; False if already delivered."""
        with self._tx():
            row = self._db.execute(
                "SELECT target_node, key_ids, state FROM relays_out WHERE relay_id=?",
                (str(relay_id),),
            ).fetchone()
            if row is None:
                return False
            if row[2] == "pending":
                self._db.execute(
                    "UPDATE relays_out SET state='voiding' WHERE relay_id=?", (str(relay_id),)
                )
                self._db.execute(
                    "INSERT OR IGNORE INTO void_out VALUES (?, ?, ?, ?)",
                    (str(relay_id), row[0], row[1], until_ms),
                )
            return True

    def void_pending_relays(self, until_ms: int) -> int:
        """After a restart: no master SAE is waiting any more, so every pending relay is voided."""
        ids = [
            uuid.UUID(r[0])
            for r in self._db.execute(
                "SELECT relay_id FROM relays_out WHERE state='pending'"
            ).fetchall()
        ]
        for rid in ids:
            self.void_relay(rid, until_ms)
        return len(ids)

    def voids_out(self, limit: int = 100) -> list[VoidOut]:
        return [
            VoidOut(uuid.UUID(r), t, _ids(k), int(u))
            for r, t, k, u in self._db.execute(
                "SELECT relay_id, target_node, key_ids, until_ms FROM void_out LIMIT ?", (limit,)
            )
        ]

    def void_done(self, relay_id: uuid.UUID) -> None:
        with self._tx():
            self._db.execute("DELETE FROM void_out WHERE relay_id=?", (str(relay_id),))
            self._db.execute("DELETE FROM relays_out WHERE relay_id=?", (str(relay_id),))

    def pending_relays(self) -> int:
        return int(
            self._db.execute("SELECT COUNT(*) FROM relays_out WHERE state='pending'").fetchone()[0]
        )

    # -- relays arriving here (target side) --------------------------------------------------
    def _tombstoned(self, relay_id: uuid.UUID) -> bool:
        return (
            self._db.execute(
                "SELECT 1 FROM tombstones WHERE relay_id=?", (str(relay_id),)
            ).fetchone()
            is not None
        )

    def accept_leg(self, incoming: tuple[str, str, int, int] | None, f: FinalHop) -> FinalOutcome:
        """Store one leg's shares (incoming slice consumed in the same transaction)."""
        with self._tx():
            if incoming is not None:
                self._take(*incoming)
            rid = str(f.relay_id)
            if self._tombstoned(f.relay_id):
                return FinalOutcome.VOIDED
            if self._db.execute("SELECT 1 FROM held WHERE relay_id=? LIMIT 1", (rid,)).fetchone():
                return FinalOutcome.COMPLETE  # a duplicate of a leg already assembled
            size = len(f.shares[0])
            if f.legs == 1:  # nothing to wait for or combine
                joined = b"".join(f.shares)
            else:
                self._db.execute(
                    "INSERT OR IGNORE INTO shares VALUES (?, ?, ?, ?, ?)",
                    (rid, f.leg, f.legs, b"".join(f.shares), f.deadline_ms),
                )
                rows = self._db.execute(
                    "SELECT leg, material FROM shares WHERE relay_id=? ORDER BY leg", (rid,)
                ).fetchall()
                if len(rows) < f.legs:
                    return FinalOutcome.PARTIAL
                total = int.from_bytes(rows[0][1], "big")
                for _, mat in rows[1:]:
                    total ^= int.from_bytes(mat, "big")
                joined = total.to_bytes(len(rows[0][1]), "big")
                self._db.execute("DELETE FROM shares WHERE relay_id=?", (rid,))
            held_bits = 8 * int(
                self._db.execute(
                    "SELECT COALESCE(SUM(LENGTH(material)), 0) FROM held"
                    " WHERE master=? AND slave=?",
                    (f.master, f.slave),
                ).fetchone()[0]
            )
            if held_bits + 8 * len(joined) > f.quota_bits:
                self._db.execute(
                    "INSERT OR IGNORE INTO tombstones VALUES (?, ?)", (rid, f.deadline_ms + 60_000)
                )
                if not f.ack_in_reply:
                    self._queue_ack(
                        f,
                        AckStatus.FAILED,
                        f"quota: pair ({f.master}, {f.slave}) "
                        f"holds {held_bits} bits not yet collected",
                    )
                return FinalOutcome.QUOTA
            for i, kid in enumerate(f.key_ids):
                self._db.execute(
                    "INSERT INTO held VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        str(kid),
                        rid,
                        f.master,
                        f.slave,
                        f.initiator_node,
                        joined[i * size : (i + 1) * size],
                        f.expires_ms,
                    ),
                )
            if not f.ack_in_reply:
                self._queue_ack(f, AckStatus.RELAYED, "")
            return FinalOutcome.COMPLETE

    def _queue_ack(self, f: FinalHop, status: AckStatus, reason: str) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO ack_out VALUES (?, ?, ?, ?, ?, ?)",
            (
                str(f.relay_id),
                f.initiator_node,
                f.ack_url,
                _ids_json(f.key_ids),
                status.value,
                reason,
            ),
        )

    def acks_out(self, limit: int = 100) -> list[AckOut]:
        return [
            AckOut(uuid.UUID(r), n, u, _ids(k), AckStatus(s), reason)
            for r, n, u, k, s, reason in self._db.execute(
                "SELECT relay_id, initiator_node, ack_url, key_ids, status, reason FROM ack_out "
                "LIMIT ?",
                (limit,),
            )
        ]

    def ack_done(self, relay_id: uuid.UUID) -> None:
        with self._tx():
            self._db.execute("DELETE FROM ack_out WHERE relay_id=?", (str(relay_id),))

    def relay_initiator(self, relay_id: uuid.UUID) -> str | None:
        """The initiator node of a relay whose keys are held here, if any."""
        row = self._db.execute(
            "SELECT initiator_node FROM held WHERE relay_id=? LIMIT 1", (str(relay_id),)
        ).fetchone()
        return None if row is None else str(row[0])

    def void_in(self, relay_id: uuid.UUID, until_ms: int) -> AckStatus:
        """The initiator voids a relay: drop what is held or partial, and refuse it from now on."""
        rid = str(relay_id)
        with self._tx():
            n = self._db.execute("DELETE FROM held WHERE relay_id=?", (rid,)).rowcount
            n += self._db.execute("DELETE FROM shares WHERE relay_id=?", (rid,)).rowcount
            self._db.execute("DELETE FROM ack_out WHERE relay_id=?", (rid,))
            self._db.execute(
                "INSERT INTO tombstones VALUES (?, ?) ON CONFLICT(relay_id) DO UPDATE SET "
                "until_ms=MAX(until_ms, excluded.until_ms)",
                (rid, until_ms),
            )
        return AckStatus.VOIDED if n else AckStatus.KEY_NOT_PRESENT

    def issue_local(
        self, master: str, slave: str, keys: Sequence[HeldKey], expires_ms: int
    ) -> None:
        """Both SAEs at this node: hold the keys for the slave at once."""
        rid = str(uuid.uuid4())
        with self._tx():
            self._db.executemany(
                "INSERT INTO held VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (str(k.key_id), rid, master, slave, self.node_id, k.material, expires_ms)
                    for k in keys
                ],
            )

    def take_held(self, master: str, slave: str, key_ids: Sequence[uuid.UUID]) -> list[HeldKey]:
        """Remove and return held keys, all or none; KeysNotFound names no reason."""
        with self._tx():
            out = []
            for kid in key_ids:
                row = self._db.execute(
                    "SELECT material FROM held WHERE key_id=? AND master=? AND slave=?",
                    (str(kid), master, slave),
                ).fetchone()
                if row is None:
                    raise KeysNotFound()
                out.append(HeldKey(kid, bytes(row[0])))
            self._db.executemany("DELETE FROM held WHERE key_id=?", [(str(k),) for k in key_ids])
            return out

    def held_count(self, master: str | None = None, slave: str | None = None) -> int:
        if master is None:
            return int(self._db.execute("SELECT COUNT(*) FROM held").fetchone()[0])
        return int(
            self._db.execute(
                "SELECT COUNT(*) FROM held WHERE master=? AND slave=?", (master, slave)
            ).fetchone()[0]
        )

    def expire(self, now_ms: int) -> list[tuple[uuid.UUID, str, tuple[uuid.UUID, ...]]]:
        """Drop held keys past their time and stale shares/tombstones.

        Returns (relay ID, initiator node, key IDs) of every relay whose held keys expired, so
        that the initiator is told (voided at both ends).
        """
        with self._tx():
            rows = self._db.execute(
                "SELECT relay_id, initiator_node, key_id FROM held WHERE expires_ms < ?",
                (now_ms,),
            ).fetchall()
            self._db.execute("DELETE FROM held WHERE expires_ms < ?", (now_ms,))
            self._db.execute("DELETE FROM shares WHERE deadline_ms < ?", (now_ms - 60_000,))
            self._db.execute("DELETE FROM tombstones WHERE until_ms < ?", (now_ms,))
            self._db.execute(
                "DELETE FROM relays_out WHERE state='pending' AND deadline_ms < ?",
                (now_ms - 600_000,),
            )
        grouped: dict[str, tuple[str, list[uuid.UUID]]] = {}
        for rid, node, kid in rows:
            grouped.setdefault(rid, (node, []))[1].append(uuid.UUID(kid))
        return [(uuid.UUID(r), n, tuple(k)) for r, (n, k) in grouped.items()]

    # -- meta --------------------------------------------------------------------------------
    def get_meta(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE name=?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, name: str, value: str) -> None:
        with self._tx():
            self._db.execute(
                "INSERT INTO meta VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value=excluded.value",
                (name, value),
            )
