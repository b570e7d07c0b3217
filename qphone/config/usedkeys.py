"""The QKD key IDs this terminal has used: a KME that serves a key twice is caught, not trusted.

ETSI GS QKD 014 does not forbid a KME to hand out a key again, and a faulty (or hostile) KME could
give two OTP calls the same pad. Each profile keeps a record of every key ID its terminal drew
(as master with ``enc_keys`` or as slave with ``dec_keys``): :meth:`UsedKeys.claim` records new
IDs durably *before* the keys are used, and refuses a batch holding any ID seen before.

Storage (next to the profile: ``<profile>.usedkeys``, 0600): SQLite, rollback journal,
``synchronous=FULL`` (a claim survives a crash and a power cut once :meth:`claim` returns). The
``keep`` most recent IDs are kept exactly; older ones are folded into a persistent Bloom filter
(:data:`FILTER_BITS` bits, :data:`FILTER_HASHES` hashes) before they are deleted, so the file stays
bounded (about ``keep`` x 50 bytes + 4 MiB) and an old ID is still recognised, with a small chance
of a false alarm that grows with the number of IDs folded in (below 1e-6 up to a million,
about 3e-4 at two million): :meth:`UsedKeys.filter_false_alarm` says how much it is now. A false
alarm fails closed like a real reuse. Only IDs are stored, never key material.

A durable claim waits for the disk: 9 ms at the median and up to 29 ms here (several ``fsync``
calls), and a fold rewrites the 4 MiB filter.  A call's event loop must not wait for that (it
sends a frame every 20 ms, and an OTP call claims a pad block several times a second), so a
call claims with :meth:`UsedKeys.aclaim`, which runs the claim on the record's own thread and
lets the loop go on; the keys are used only once it has returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

FILTER_BITS = 1 << 25  # 4 MiB
FILTER_HASHES = 12
DEFAULT_KEEP = 200_000  # IDs kept exactly (the most recent)


class Seen(Enum):
    RECORDED = "recorded"  # in the exact record: certainly used before
    FILTER = "filter"  # in the filter of older IDs: used before, or (rarely) a false alarm


@dataclass(frozen=True)
class Reuse:
    """A key ID of a claim that this terminal has seen before."""

    key_id: uuid.UUID
    seen: Seen
    when: float | None  # when it was recorded (None: only the filter knows it)


class UsedKeysError(OSError):
    """The record cannot be opened or written; the message names the file and the fix."""


def used_keys_path(profile_source: Path | None, identity_file: Path) -> Path:
    """Where a profile's record lives: next to the profile file (else to its identity file)."""
    base = profile_source if profile_source is not None else identity_file
    return base.with_name(base.name + ".usedkeys")


def _positions(key_id: uuid.UUID) -> list[int]:
    digest = hashlib.blake2b(key_id.bytes, digest_size=4 * FILTER_HASHES).digest()
    return [
        int.from_bytes(digest[4 * i : 4 * i + 4], "little") % FILTER_BITS
        for i in range(FILTER_HASHES)
    ]


class UsedKeys:
    """One profile's record of used key IDs (one process at a time; its methods may be called
    from any thread, one at a time: a lock serialises them)."""

    def __init__(self, path: Path, *, keep: int = DEFAULT_KEEP) -> None:
        if keep < 1:
            raise ValueError("keep must be >= 1")
        self.path = path
        self.keep = keep
        self._lock = threading.Lock()  # one claim at a time, whichever thread asks
        self._worker: ThreadPoolExecutor | None = None  # made on the first aclaim
        try:
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            db = self._db
            db.execute("PRAGMA journal_mode=DELETE")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS used (seq INTEGER PRIMARY KEY, "
                "id BLOB NOT NULL UNIQUE, t REAL NOT NULL)"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS filter (one INTEGER PRIMARY KEY CHECK (one = 1), "
                "bits BLOB NOT NULL, folded INTEGER NOT NULL)"
            )
            row = db.execute("SELECT bits, folded FROM filter").fetchone()
        except (OSError, sqlite3.Error) as e:
            raise UsedKeysError(
                f"cannot open the record of used QKD key IDs {path}: {e}; check the directory is "
                "writable (the record must not be deleted: it is what stops a key being used twice)"
            ) from None
        self._filter = bytearray(row[0]) if row else bytearray(FILTER_BITS // 8)
        self._folded = int(row[1]) if row else 0
        if len(self._filter) != FILTER_BITS // 8:
            raise UsedKeysError(f"{path}: the filter has the wrong size; the file is damaged")

    def close(self) -> None:
        """Wait for a claim in progress, then close the file."""
        if self._worker is not None:
            self._worker.shutdown(wait=True)
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._db.close()

    def __enter__(self) -> UsedKeys:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _in_filter(self, key_id: uuid.UUID) -> bool:
        return all(self._filter[p >> 3] >> (p & 7) & 1 for p in _positions(key_id))

    def seen(self, key_id: uuid.UUID) -> Reuse | None:
        row = self._db.execute("SELECT t FROM used WHERE id = ?", (key_id.bytes,)).fetchone()
        if row is not None:
            return Reuse(key_id, Seen.RECORDED, float(row[0]))
        if self._folded and self._in_filter(key_id):
            return Reuse(key_id, Seen.FILTER, None)
        return None

    async def aclaim(self, key_ids: Sequence[uuid.UUID]) -> Reuse | None:
        """:meth:`claim` on the record's own thread: the event loop goes on while the disk
        syncs.  Returns once the claim is durable (or refused)."""
        if self._worker is None:
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="usedkeys")
        ids = list(key_ids)
        return await asyncio.get_running_loop().run_in_executor(self._worker, self.claim, ids)

    def claim(self, key_ids: Sequence[uuid.UUID], now: float | None = None) -> Reuse | None:
        """Record ``key_ids`` as used, durably, unless one of them was seen before (or appears
        twice in ``key_ids``): then nothing is recorded and that one is returned."""
        with self._lock:
            return self._claim(key_ids, now)

    def _claim(self, key_ids: Sequence[uuid.UUID], now: float | None) -> Reuse | None:
        t = time.time() if now is None else now
        batch: set[uuid.UUID] = set()
        for kid in key_ids:
            if kid in batch:
                return Reuse(kid, Seen.RECORDED, t)
            batch.add(kid)
            reuse = self.seen(kid)
            if reuse is not None:
                return reuse
        try:
            with self._tx():
                self._db.executemany(
                    "INSERT INTO used (id, t) VALUES (?, ?)", [(k.bytes, t) for k in key_ids]
                )
                self._fold()
        except sqlite3.Error as e:
            raise UsedKeysError(
                f"cannot write the record of used QKD key IDs {self.path}: {e}; free disk space "
                "or fix its permissions (no key is used that is not recorded: fail closed)"
            ) from None
        return None

    def _fold(self) -> None:
        """Past keep + keep/8 IDs, fold the oldest into the filter down to ``keep``."""
        count, last = self._db.execute("SELECT COUNT(*), MAX(seq) FROM used").fetchone()
        if count <= self.keep + self.keep // 8:
            return
        cut = int(last) - self.keep
        rows = self._db.execute("SELECT id FROM used WHERE seq <= ?", (cut,)).fetchall()
        bits = bytearray(self._filter)
        for (raw,) in rows:
            for p in _positions(uuid.UUID(bytes=bytes(raw))):
                bits[p >> 3] |= 1 << (p & 7)
        folded = self._folded + len(rows)
        self._db.execute(
            "INSERT INTO filter VALUES (1, ?, ?) ON CONFLICT(one) DO UPDATE SET "
            "bits = excluded.bits, folded = excluded.folded",
            (bytes(bits), folded),
        )
        self._db.execute("DELETE FROM used WHERE seq <= ?", (cut,))
        self._filter, self._folded = bits, folded  # only once the statements succeeded

    @property
    def recorded(self) -> int:
        """IDs kept exactly."""
        return int(self._db.execute("SELECT COUNT(*) FROM used").fetchone()[0])

    @property
    def folded(self) -> int:
        """IDs folded into the filter."""
        return self._folded

    def filter_false_alarm(self) -> float:
        """The chance that a fresh ID is taken for one in the filter, at its present fill."""
        return (1.0 - math.exp(-FILTER_HASHES * self._folded / FILTER_BITS)) ** FILTER_HASHES
