"""SQLite implementation of :class:`keyserver.kms.store.KeyStore` (WAL, one transaction per call).

Durability: WAL with ``synchronous=NORMAL`` survives a SIGKILL of the process at any moment (the
WAL is in the OS page cache); ``synchronous="FULL"`` (config) also survives power loss at the cost
of an fsync per transaction. ``secure_delete`` overwrites freed key material in the database file.
The data directory is locked (flock) so two KME processes never share one store.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

from keyserver.kms.store import (
    IssuedKey,
    IssueRequest,
    KeysNotAuthorized,
    KeysNotFound,
    LinkDesync,
    Notice,
    Segment,
    StoreError,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS segments (
    seq      INTEGER PRIMARY KEY,
    owner    TEXT    NOT NULL,
    consumed INTEGER NOT NULL,         -- bytes already issued from the front of this segment
    material BLOB    NOT NULL,         -- the bytes not yet issued
    ready    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS segments_owner ON segments(owner, seq);
CREATE TABLE IF NOT EXISTS held_keys (
    key_id   TEXT PRIMARY KEY,
    master   TEXT NOT NULL,
    slave    TEXT NOT NULL,
    material BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    seq          INTEGER PRIMARY KEY,
    kind         TEXT    NOT NULL,
    key_id       TEXT    NOT NULL,
    owner        TEXT    NOT NULL,
    master       TEXT    NOT NULL,
    slave        TEXT    NOT NULL,
    size_bytes   INTEGER NOT NULL,
    start_seg    INTEGER NOT NULL,
    start_offset INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


class SqliteKeyStore:
    """One KME's key store in ``data_dir/keys.sqlite3``."""

    def __init__(
        self,
        data_dir: Path,
        local_id: str,
        *,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
    ) -> None:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.local_id = local_id
        self._lock_fd = os.open(data_dir / "kme.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise StoreError(
                f"{data_dir} is in use by another KME process; stop it or use another data_dir"
            ) from None
        self._db = sqlite3.connect(data_dir / "keys.sqlite3", isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.executescript(_SCHEMA)
        with self._tx():
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('local_id', ?)", (local_id,))
        stored = self.get_meta("local_id")
        if stored != local_id:
            self.close()
            raise StoreError(
                f"{data_dir} belongs to KME {stored!r}, not {local_id!r}; use that KME's data_dir"
            )
        # Cache of issuable bytes per owner (single process owns the store: see the lock above).
        self._available: dict[str, int] = {}
        for owner, total in self._db.execute(
            "SELECT owner, SUM(LENGTH(material)) FROM segments WHERE ready=1 GROUP BY owner"
        ):
            self._available[owner] = int(total)

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)

    # -- helpers ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _meta_int(self, name: str, default: int) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE name=?", (name,)).fetchone()
        if row is None:
            return default
        try:
            return int(row[0])
        except ValueError:
            return default

    def _set_meta_raw(self, name: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value=excluded.value",
            (name, value),
        )

    def get_meta(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE name=?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, name: str, value: str) -> None:
        with self._tx():
            self._set_meta_raw(name, value)

    # -- segments --------------------------------------------------------------------------------
    def next_segment_seq(self) -> int:
        return self._meta_int("max_segment_seq", 0) + 1

    def add_segments(self, segments: Sequence[Segment], *, ready: bool) -> int:
        with self._tx():
            top = self._meta_int("max_segment_seq", 0)
            added: dict[str, int] = {}
            for seg in segments:
                if seg.seq <= top:
                    continue  # already held (or held and consumed): never resurrect
                if seg.seq != top + 1:
                    raise StoreError(f"segment {seg.seq} arrived before segment {top + 1}")
                if not seg.material:
                    raise StoreError(f"segment {seg.seq} is empty")
                self._db.execute(
                    "INSERT INTO segments VALUES (?, ?, 0, ?, ?)",
                    (seg.seq, seg.owner, seg.material, int(ready)),
                )
                top = seg.seq
                if ready:
                    added[seg.owner] = added.get(seg.owner, 0) + len(seg.material)
            self._set_meta_raw("max_segment_seq", str(top))
        for owner, n in added.items():
            self._available[owner] = self._available.get(owner, 0) + n
        return top

    def mark_ready(self, up_to_seq: int) -> None:
        with self._tx():
            rows = self._db.execute(
                "SELECT owner, SUM(LENGTH(material)) FROM segments WHERE ready=0 AND seq<=? "
                "GROUP BY owner",
                (up_to_seq,),
            ).fetchall()
            self._db.execute("UPDATE segments SET ready=1 WHERE ready=0 AND seq<=?", (up_to_seq,))
        for owner, total in rows:
            self._available[owner] = self._available.get(owner, 0) + int(total)

    def pending_segments(self, limit: int) -> list[Segment]:
        rows = self._db.execute(
            "SELECT seq, owner, material FROM segments WHERE ready=0 AND consumed=0 "
            "ORDER BY seq LIMIT ?",
            (limit,),
        ).fetchall()
        return [Segment(int(s), str(o), bytes(m)) for s, o, m in rows]

    def available_bytes(self, owner: str) -> int:
        return self._available.get(owner, 0)

    def stored_bytes(self, owner: str) -> int:
        row = self._db.execute(
            "SELECT COALESCE(SUM(LENGTH(material)), 0) FROM segments WHERE owner=?", (owner,)
        ).fetchone()
        return int(row[0])

    def segment_count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM segments").fetchone()[0])

    # -- carving ---------------------------------------------------------------------------------
    def _carve(
        self, owner: str, size: int, *, ready_only: bool
    ) -> tuple[bytes, int, int, int]:
        """Take `size` bytes from the front of `owner`'s stream (inside a transaction).

        Returns (material, first segment, its offset, ready bytes consumed).
        """
        parts: list[bytes] = []
        need = size
        start: tuple[int, int] | None = None
        ready_used = 0
        cond = "AND ready=1" if ready_only else ""
        cur = self._db.execute(
            "SELECT seq, consumed, material, ready FROM segments "
            f"WHERE owner=? {cond} ORDER BY seq",
            (owner,),
        )
        updates: list[tuple[int, bytes, int]] = []
        deletes: list[int] = []
        for seq, consumed, material, ready in cur:
            if need == 0:
                break
            if start is None:
                start = (int(seq), int(consumed))
            take = min(need, len(material))
            parts.append(bytes(material[:take]))
            need -= take
            if ready:
                ready_used += take
            if take == len(material):
                deletes.append(int(seq))
            else:
                updates.append((int(consumed) + take, bytes(material[take:]), int(seq)))
        cur.close()
        if need:
            raise _Short()
        assert start is not None
        if deletes:
            self._db.executemany("DELETE FROM segments WHERE seq=?", [(s,) for s in deletes])
        if updates:
            self._db.executemany(
                "UPDATE segments SET consumed=?, material=? WHERE seq=?", updates
            )
        return b"".join(parts), start[0], start[1], ready_used

    def issue(self, requests: Sequence[IssueRequest]) -> list[list[IssuedKey] | None]:
        out: list[list[IssuedKey] | None] = []
        used = 0
        owner = self.local_id
        with self._tx():
            next_seq = self._meta_int("outbox_seq", 0)
            for req in requests:
                total = req.number * req.size_bytes
                if total > self._available.get(owner, 0) - used:
                    out.append(None)
                    continue
                self._db.execute("SAVEPOINT req")
                keys: list[IssuedKey] = []
                try:
                    for _ in range(req.number):
                        material, seg, off, ready_used = self._carve(
                            owner, req.size_bytes, ready_only=True
                        )
                        key_id = uuid.uuid4()
                        next_seq += 1
                        self._db.execute(
                            "INSERT INTO outbox VALUES (?, 'issue', ?, ?, ?, ?, ?, ?, ?)",
                            (next_seq, str(key_id), owner, req.master, req.slave,
                             req.size_bytes, seg, off),
                        )
                        used += ready_used
                        keys.append(IssuedKey(key_id, material))
                except _Short:
                    self._db.execute("ROLLBACK TO req")
                    self._db.execute("RELEASE req")
                    out.append(None)
                    continue
                self._db.execute("RELEASE req")
                out.append(keys)
            self._set_meta_raw("outbox_seq", str(next_seq))
        self._available[owner] = self._available.get(owner, 0) - used
        return out

    def void(self, key_ids: Sequence[uuid.UUID]) -> None:
        if not key_ids:
            return
        with self._tx():
            next_seq = self._meta_int("outbox_seq", 0)
            for key_id in key_ids:
                next_seq += 1
                self._db.execute(
                    "INSERT INTO outbox VALUES (?, 'void', ?, ?, '', '', 0, 0, 0)",
                    (next_seq, str(key_id), self.local_id),
                )
            self._set_meta_raw("outbox_seq", str(next_seq))

    def outbox(self, limit: int) -> list[Notice]:
        rows = self._db.execute("SELECT * FROM outbox ORDER BY seq LIMIT ?", (limit,)).fetchall()
        return [
            Notice(int(s), k, uuid.UUID(kid), o, m, sl, int(n), int(ss), int(so))
            for s, k, kid, o, m, sl, n, ss, so in rows
        ]

    def ack_outbox(self, up_to_seq: int) -> None:
        with self._tx():
            self._db.execute("DELETE FROM outbox WHERE seq<=?", (up_to_seq,))

    # -- slave side ------------------------------------------------------------------------------
    def apply_notices(self, notices: Sequence[Notice]) -> int:
        with self._tx():
            applied = self._meta_int("peer_notice_seq", 0)
            ready_delta: dict[str, int] = {}
            for n in sorted(notices, key=lambda n: n.seq):
                if n.seq <= applied:
                    continue
                if n.seq != applied + 1:
                    raise LinkDesync(f"peer notice {n.seq} arrived before notice {applied + 1}")
                if n.owner == self.local_id:
                    raise LinkDesync(f"peer notice {n.seq} draws from segments this KME owns")
                if n.kind == "issue":
                    row = self._db.execute(
                        "SELECT seq, consumed FROM segments WHERE owner=? ORDER BY seq LIMIT 1",
                        (n.owner,),
                    ).fetchone()
                    if row is None or (int(row[0]), int(row[1])) != (
                        n.start_segment,
                        n.start_offset,
                    ):
                        raise LinkDesync(
                            f"peer notice {n.seq} starts at segment {n.start_segment}+"
                            f"{n.start_offset}, this KME is at {row}"
                        )
                    try:
                        material, _, _, ready_used = self._carve(
                            n.owner, n.size_bytes, ready_only=False
                        )
                    except _Short:
                        raise LinkDesync(
                            f"peer notice {n.seq} needs more key material than this KME holds"
                        ) from None
                    # The peer holds every segment it drew from: they (and all before) are ready.
                    ready_delta[n.owner] = ready_delta.get(n.owner, 0) - ready_used
                    self._db.execute(
                        "INSERT OR REPLACE INTO held_keys VALUES (?, ?, ?, ?)",
                        (str(n.key_id), n.master, n.slave, material),
                    )
                else:
                    self._db.execute("DELETE FROM held_keys WHERE key_id=?", (str(n.key_id),))
                applied = n.seq
            self._set_meta_raw("peer_notice_seq", str(applied))
        for owner, d in ready_delta.items():
            self._available[owner] = self._available.get(owner, 0) + d
        return applied

    def take_keys(self, master: str, slave: str, key_ids: Sequence[uuid.UUID]) -> list[IssuedKey]:
        with self._tx():
            found: dict[str, tuple[str, str, bytes]] = {}
            ids = [str(k) for k in key_ids]
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                marks = ",".join("?" * len(chunk))
                for kid, m, s, mat in self._db.execute(
                    "SELECT key_id, master, slave, material FROM held_keys "
                    f"WHERE key_id IN ({marks})",
                    chunk,
                ):
                    found[str(kid)] = (str(m), str(s), bytes(mat))
            if len(found) != len(set(ids)):
                raise KeysNotFound("one or more keys specified are not found on KME")
            for m, s, _ in found.values():
                if m != master or s != slave:
                    raise KeysNotAuthorized("keys were issued to another SAE pair")
            self._db.executemany("DELETE FROM held_keys WHERE key_id=?", [(k,) for k in ids])
        return [IssuedKey(k, found[str(k)][2]) for k in key_ids]

    def held_key_count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM held_keys").fetchone()[0])


class _Short(Exception):
    """Internal: not enough material in the stream."""
