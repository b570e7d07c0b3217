"""A QKD module's durable store (SQLite): its final keys, authentication pad, block counters.

Every write that must survive a SIGKILL is committed before the module acts on it (any
``synchronous`` survives a process kill; the default ``NORMAL`` also a power cut on a journaling
file system, ``FULL`` on any).

Erasure: the database runs in rollback-journal mode (``journal_mode=DELETE``, never WAL: a WAL
keeps every page a transaction wrote, key included, until it is checkpointed and reset) with
``secure_delete=ON``, so a key handed to the node is overwritten with zeros in the database file
within the transaction that removes it, and the journal (which holds the page as it was before
the transaction) is deleted at commit. ``temp_store=MEMORY``: no temporary file. Files are 0600.
No key leaves any file later than the commit that hands it out (docs/keyserver.md, "At rest").

Keys: ``(id, block, idx, material, committed)``. A receiver stores a block *uncommitted* before it
confirms it, and commits it on the transmitter's ``Commit`` (or the next Hello); a transmitter
stores blocks committed. Auth chunks: ``(block, to_receiver, to_transmitter, committed)``;
block -1 is the pre-shared initial key.

The module uses its store from the event loop (the northbound API) and from worker threads (block
storage, commits): one lock serialises every method, so two transactions never interleave on the
one connection.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from keyserver.qkd.classicalchannel import Chunk

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _locked(
    method: Callable[Concatenate[ModuleStore, _P], _R],
) -> Callable[Concatenate[ModuleStore, _P], _R]:
    def run(self: ModuleStore, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self._lock:
            return method(self, *args, **kwargs)

    run.__doc__ = method.__doc__
    return run


class ModuleStore:
    def __init__(self, data_dir: Path, *, synchronous: str = "NORMAL") -> None:
        self._lock = threading.RLock()
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = data_dir / "module.sqlite"
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(self.path, 0o600)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db = self._db
        db.execute("PRAGMA secure_delete=ON")
        # a store an older version left in WAL mode: this checkpoints it and removes the WAL
        db.execute("PRAGMA journal_mode=DELETE")
        db.execute("PRAGMA temp_store=MEMORY")
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)")
        db.execute(
            "CREATE TABLE IF NOT EXISTS keys (id TEXT PRIMARY KEY, block INTEGER NOT NULL, "
            "idx INTEGER NOT NULL, material BLOB NOT NULL, committed INTEGER NOT NULL)"
        )
        db.execute("CREATE INDEX IF NOT EXISTS keys_order ON keys (committed, block, idx)")
        db.execute(
            "CREATE TABLE IF NOT EXISTS auth_chunks (block INTEGER PRIMARY KEY, "
            "to_receiver BLOB NOT NULL, to_transmitter BLOB NOT NULL, committed INTEGER NOT NULL)"
        )
        # the number of keys, kept with every transaction that adds or removes keys (the stock
        # is asked for on every heartbeat, status request and production decision)
        self._keys = int(db.execute("SELECT COUNT(*) FROM keys").fetchone()[0])

    @_locked
    def close(self) -> None:
        self._db.close()

    # -- meta --------------------------------------------------------------------------------
    @_locked
    def get(self, key: str, default: Any = None) -> Any:
        row = self._db.execute("SELECT v FROM meta WHERE k = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    @_locked
    def put(self, key: str, value: Any) -> None:
        self._db.execute(
            "INSERT INTO meta (k, v) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v",
            (key, json.dumps(value)),
        )

    # -- the initial key and the pad ---------------------------------------------------------
    @_locked
    def init_auth(self, to_receiver: bytes, to_transmitter: bytes) -> None:
        """Record the pre-shared key on first start; refuse a different one later."""
        digest = hashlib.sha256(to_receiver + to_transmitter).hexdigest()
        known = self.get("initial_auth_key_sha256")
        if known is None:
            with self._db:
                self._db.execute("BEGIN")
                self.put("initial_auth_key_sha256", digest)
                self._db.execute(
                    "INSERT OR REPLACE INTO auth_chunks VALUES (-1, ?, ?, 1)",
                    (to_receiver, to_transmitter),
                )
        elif known != digest:
            raise ValueError(
                "initial_auth_key differs from the one this module started with: restore it, or "
                "empty data_dir to start the link anew (at both modules)"
            )

    @_locked
    def chunks(self) -> list[Chunk]:
        rows = self._db.execute(
            "SELECT block, to_receiver, to_transmitter, committed FROM auth_chunks ORDER BY block"
        ).fetchall()
        return [Chunk(int(b), (bytearray(rx), bytearray(tx)), bool(c)) for b, rx, tx, c in rows]

    @_locked
    def save_reservation(self, direction: int, position: int) -> None:
        self.put(f"send_reserved_{direction}", position)

    @_locked
    def reservation(self, direction: int) -> int:
        return int(self.get(f"send_reserved_{direction}", 0))

    @_locked
    def save_chunk(self, block: int, to_receiver: bytes, to_transmitter: bytes) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO auth_chunks VALUES (?, ?, ?, 0)",
            (block, to_receiver, to_transmitter),
        )

    @_locked
    def commit_chunk(self, block: int) -> None:
        self._db.execute("UPDATE auth_chunks SET committed = 1 WHERE block = ?", (block,))

    @_locked
    def drop_chunks_after(self, block: int) -> None:
        self._db.execute("DELETE FROM auth_chunks WHERE block > ? AND committed = 0", (block,))

    # -- blocks and keys ---------------------------------------------------------------------
    @_locked
    def store_block(
        self,
        block: int,
        keys: list[tuple[uuid.UUID, bytes]],
        refill: tuple[bytes, bytes],
        committed: bool,
    ) -> None:
        """Keys and the refill chunk of one block, in one transaction."""
        c = int(committed)
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO keys VALUES (?, ?, ?, ?, ?)",
                [(str(k), block, i, material, c) for i, (k, material) in enumerate(keys)],
            )
            if refill[0] or refill[1]:
                self._db.execute(
                    "INSERT OR REPLACE INTO auth_chunks VALUES (?, ?, ?, ?)",
                    (block, refill[0], refill[1], c),
                )
            if committed:
                self.put("last_committed_block", block)
            else:
                self.put("last_stored_block", block)
        self._keys += len(keys)

    @_locked
    def commit_blocks_upto(self, block: int) -> list[int]:
        """Receiver: commit pending blocks <= block; returns them."""
        rows = self._db.execute(
            "SELECT DISTINCT block FROM keys WHERE committed = 0 AND block <= ? UNION "
            "SELECT block FROM auth_chunks WHERE committed = 0 AND block <= ? AND block >= 0",
            (block, block),
        ).fetchall()
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "UPDATE keys SET committed = 1 WHERE committed = 0 AND block <= ?", (block,)
            )
            self._db.execute(
                "UPDATE auth_chunks SET committed = 1 WHERE committed = 0 AND block <= ?", (block,)
            )
            if rows:
                self.put("last_committed_block", max(int(r[0]) for r in rows))
        return sorted(int(r[0]) for r in rows)

    @_locked
    def drop_pending_after(self, block: int) -> int:
        """Receiver: forget uncommitted blocks above ``block`` (never stored by the transmitter)."""
        with self._db:
            self._db.execute("BEGIN")
            cur = self._db.execute("DELETE FROM keys WHERE committed = 0 AND block > ?", (block,))
            self._db.execute("DELETE FROM auth_chunks WHERE committed = 0 AND block > ?", (block,))
        self._keys -= int(cur.rowcount)
        return int(cur.rowcount)

    @_locked
    def key_count(self) -> int:
        return self._keys

    @_locked
    def take_keys(self, number: int) -> list[tuple[uuid.UUID, bytes]]:
        """Transmitter: the oldest ``number`` committed keys, removed (all or none)."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            rows = self._db.execute(
                "SELECT id, material FROM keys WHERE committed = 1 ORDER BY block, idx LIMIT ?",
                (number,),
            ).fetchall()
            if len(rows) < number:
                return []
            self._db.executemany("DELETE FROM keys WHERE id = ?", [(r[0],) for r in rows])
        self._keys -= len(rows)
        return [(uuid.UUID(r[0]), bytes(r[1])) for r in rows]

    @_locked
    def get_keys(self, ids: list[uuid.UUID]) -> list[tuple[uuid.UUID, bytes]] | None:
        """Receiver: the keys with these IDs, removed; None (nothing removed) unless all exist."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            out = []
            for kid in ids:
                row = self._db.execute(
                    "SELECT material FROM keys WHERE id = ?", (str(kid),)
                ).fetchone()
                if row is None:
                    return None
                out.append((kid, bytes(row[0])))
            self._db.executemany("DELETE FROM keys WHERE id = ?", [(str(k),) for k in ids])
        self._keys -= len(set(ids))  # each distinct ID was present and is deleted once
        return out
