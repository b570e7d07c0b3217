"""The one SQLite connection a node's store parts share, and its transactions.

A node's store (:mod:`keyserver.kms.nodestore`) is three parts over one database: link-key
streams (:mod:`keyserver.kms.linkkeystore`), relay records (:mod:`keyserver.kms.relayjournal`)
and keys held for SAEs (:mod:`keyserver.kms.heldkeys`). Each public write of a part is one
atomic transaction; an operation that spans parts (a relay spends link key and records itself
in one transaction) opens :meth:`StoreDb.transaction` around the parts' calls, and each part's
own transaction inside it becomes a savepoint of the outer one, so the whole is all or nothing
and counts as one write transaction.

The connection runs in autocommit mode (``isolation_level=None``): every transaction here is an
explicit ``BEGIN IMMEDIATE`` ... ``COMMIT``, so a write never waits for a lock half-way through.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import uuid
from collections.abc import Callable, Iterator, Sequence


class StoreError(Exception):
    """Base class of node store errors."""


def ids_from_json(raw: str) -> tuple[uuid.UUID, ...]:
    """Key IDs as stored in a TEXT column: a JSON list of UUID strings."""
    return tuple(uuid.UUID(x) for x in json.loads(raw))


def ids_to_json(ids: Sequence[uuid.UUID]) -> str:
    return json.dumps([str(k) for k in ids])


class StoreDb:
    """One connection, its (nesting) write transactions and their count."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.transactions = 0  # write transactions committed (benchmarks and tests count them)
        self._depth = 0
        self._on_rollback: list[Callable[[], None]] = []

    def on_rollback(self, drop: Callable[[], None]) -> None:
        """Call `drop` whenever writes are rolled back (a part's cache of what they changed)."""
        self._on_rollback.append(drop)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """All or nothing; inside another transaction, a savepoint of it."""
        if self._depth:
            yield from self._savepoint()
            return
        self.conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._depth = 0
            self.conn.execute("ROLLBACK")
            self._rolled_back()
            raise
        self._depth = 0
        self.conn.execute("COMMIT")
        self.transactions += 1

    def _savepoint(self) -> Iterator[None]:
        name = f"part{self._depth}"
        self.conn.execute(f"SAVEPOINT {name}")
        self._depth += 1
        try:
            yield
        except BaseException:
            self._depth -= 1
            self.conn.execute(f"ROLLBACK TO {name}")
            self.conn.execute(f"RELEASE {name}")
            self._rolled_back()
            raise
        self._depth -= 1
        self.conn.execute(f"RELEASE {name}")

    def _rolled_back(self) -> None:
        for drop in self._on_rollback:
            drop()
