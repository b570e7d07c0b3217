"""A node's link-key streams, persisted: announce, spend, consume, repair (store part).

The stream semantics are those of :mod:`keyserver.kms.linkstream` (owners, end positions, the
layout hash, cursors, desync repair); this part keeps them in four tables of the node's store
(:mod:`keyserver.kms.nodestore`): ``streams`` (end, cursor, layout hash per (link, owner)),
``blocks`` (the key, a spent-byte bitmap and the unspent count per block), ``pending`` (drawn
keys announced but not yet confirmed) and ``announce`` (the last announcement and its answer).

Every public write is one atomic transaction of the shared :class:`~keyserver.kms.storedb.StoreDb`
(or part of an enclosing one). A spent or consumed byte is overwritten with zeros in the
transaction that uses it (the database runs with ``secure_delete``), and a block whose bytes are
all used is deleted.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from keyserver.kms.linkstream import GENESIS, StreamView, extend_layout, repaired_layout
from keyserver.kms.storedb import StoreDb, StoreError, ids_from_json, ids_to_json


class SliceUnavailable(StoreError):
    """Referenced link-key bytes are not held or were already used (a replay or a desync)."""


class OutOfLinkKey(StoreError):
    """The node's own stream on a link holds less than needed."""

    def __init__(self, link: str, need: int, have: int) -> None:
        super().__init__(f"link {link}: {have} bytes of key, {need} needed")
        self.link, self.need, self.have = link, need, have


@dataclass(frozen=True)
class Block:
    """One module key drawn for a link, given to one owner's stream."""

    key_id: uuid.UUID
    owner: str
    material: bytes


@dataclass(frozen=True)
class Spend:
    """A request to spend `nbytes` of this node's own stream on a link, from its cursor."""

    link: str
    owner: str
    nbytes: int


@dataclass(frozen=True)
class Slice:
    """Bytes [start, start + len(material)) of one stream, spent or consumed."""

    link: str
    owner: str
    start: int
    material: bytes


def _mask(lo: int, hi: int) -> int:
    return ((1 << (hi - lo)) - 1) << lo


class LinkKeyStore:
    """The link-key streams of every link of this node (tables streams, blocks, pending,
    announce)."""

    def __init__(self, db: StoreDb, node_id: str) -> None:
        self.node_id = node_id
        self._db = db.conn
        self._tx = db.transaction
        # unspent bytes per (link, owner) stream, kept in step with the blocks table by every
        # write (dropped on a rollback): a relay asks for it several times per request
        self._stock: dict[tuple[str, str], int] = {}
        # end position per stream, once read (a one-hop direct key checks it per request)
        self._end: dict[tuple[str, str], int] = {}
        db.on_rollback(self._stock.clear)
        db.on_rollback(self._end.clear)

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

    def end(self, link: str, owner: str) -> int:
        """The end position of `owner`'s stream on `link` (what :meth:`view` says, kept in
        memory)."""
        n = self._end.get((link, owner))
        if n is None:
            n = self._end[(link, owner)] = self._stream(link, owner)[0]
        return n

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
        self._end.pop((link, block.owner), None)

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
            (link, seq, ids_to_json(got)),
        )

    # -- receiving announcements (receiver side) ---------------------------------------------
    def announced(self, link: str, seq: int) -> list[uuid.UUID] | None:
        """The answer already given to announcement `seq`, if it is the last one applied."""
        row = self._db.execute("SELECT seq, got FROM announce WHERE link=?", (link,)).fetchone()
        if row is None or int(row[0]) != seq:
            return None
        return list(ids_from_json(row[1]))

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
        rows = [  # from the block holding `start` (blocks never overlap), index seeks only
            r
            for r in self._db.execute(
                "SELECT start, material, spent, unspent FROM blocks WHERE link=?1 AND owner=?2 "
                "AND start >= COALESCE((SELECT MAX(start) FROM blocks WHERE link=?1 "
                "AND owner=?2 AND start <= ?3), ?3) AND start < ?4 ORDER BY start",
                (link, owner, start, stop),
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
        self._erase(link, owner, length, updates, deletes)
        return material

    def _erase(
        self,
        link: str,
        owner: str,
        length: int,
        updates: list[tuple[bytes, bytes, int, int]],
        deletes: list[int],
    ) -> None:
        """Apply what :meth:`_collect` computed: the slice's bytes zeroed and marked used."""
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

    def _spend(self, s: Spend) -> Slice:
        if s.owner != self.node_id:
            raise StoreError("a node spends only its own streams")
        row = self._db.execute(
            "SELECT end_pos, cursor FROM streams WHERE link=? AND owner=?", (s.link, s.owner)
        ).fetchone()
        if row is None:
            raise StoreError(f"link {s.link} has no stream owned by {s.owner}")
        end, cursor = int(row[0]), int(row[1])
        # the block holding the cursor, else the first block after it (index seeks only)
        start = cursor
        for bstart, blen in self._db.execute(
            "SELECT start, LENGTH(material) FROM blocks WHERE link=?1 AND owner=?2 "
            "AND start >= COALESCE((SELECT MAX(start) FROM blocks WHERE link=?1 AND owner=?2 "
            "AND start <= ?3), ?3) ORDER BY start LIMIT 2",
            (s.link, s.owner, cursor),
        ):
            if bstart + blen > cursor:
                start = max(cursor, int(bstart))
                break
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

    def consume_if(
        self, link: str, owner: str, start: int, length: int, accept: Callable[[bytes], bool]
    ) -> bytes | None:
        """Consume a slice only if `accept` says yes to its bytes (a one-hop direct key's tag,
        checked with the slice's MAC key); None, and nothing changed, if not."""
        with self._tx():
            material, updates, deletes = self._collect(link, owner, start, length)
            if not accept(material):
                return None
            self._erase(link, owner, length, updates, deletes)
            return material

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

    def owner_cursor(
        self, link: str, owner: str, cursor: int, erase_below: int | None = None
    ) -> None:
        """The owner reports its cursor: everything below it is spent, abandoned or (one-hop
        direct keys, :mod:`keyserver.kms.directkey`) waiting for its slave SAE. Erase what is
        below `erase_below` (default: the cursor; the link manager passes the cursor the owner
        reported ``hold_seconds`` ago, so that a direct key stays claimable that long)."""
        cursor_now = cursor
        cursor = cursor_now if erase_below is None else min(erase_below, cursor_now)
        with self._tx():
            self._stream(link, owner)  # raises if unknown
            self._stock.pop((link, owner), None)
            self._db.execute(
                "UPDATE streams SET cursor=MAX(cursor, ?), max_cursor_seen=MAX(max_cursor_seen, ?) "
                "WHERE link=? AND owner=?",
                (cursor_now, cursor_now, link, owner),
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
            self._end.pop((link, owner), None)
            new_end = max(new_end, end, cursor)
            self._db.execute("DELETE FROM blocks WHERE link=? AND owner=?", (link, owner))
            self._db.execute(
                "UPDATE streams SET end_pos=?, cursor=?, layout=?, max_cursor_seen=? "
                "WHERE link=? AND owner=?",
                (new_end, new_end, repaired_layout(new_end), max(seen, new_end), link, owner),
            )
