"""The one SQLite connection a node's store parts share, and its transactions.

A node's store (:mod:`keyserver.kms.nodestore`) is three parts over one database: link-key
streams (:mod:`keyserver.kms.linkkeystore`), relay records (:mod:`keyserver.kms.relayjournal`)
and keys held for SAEs (:mod:`keyserver.kms.heldkeys`). Each public write of a part is one
atomic transaction (:meth:`StoreDb.transaction`). An operation that spans parts (a relay spends
link key and records itself) opens a transaction around the parts' calls; each part's own
transaction inside it joins it, so the whole is one ``BEGIN IMMEDIATE`` ... ``COMMIT``, all or
nothing, and counts as one write transaction.

A step that fails inside a joined transaction has left the transaction half done, so the
whole must fail: if its exception is caught inside the transaction, the transaction is rolled
back at its end anyway and :class:`StoreError` says so. A step the caller means to try and go
on without runs in :meth:`StoreDb.savepoint`, which undoes only that step when it fails.

The connection runs in autocommit mode (``isolation_level=None``): every transaction here is an
explicit ``BEGIN IMMEDIATE``, so a write never waits for the lock half-way through.
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
    """One connection, its write transactions (joined when nested) and their count."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.transactions = 0  # write transactions committed (benchmarks and tests count them)
        self._depth = 0  # transactions and savepoints open
        self._failed = False  # a joined step failed: the open transaction must not commit
        self._on_rollback: list[Callable[[], None]] = []

    def on_rollback(self, drop: Callable[[], None]) -> None:
        """Call `drop` whenever writes are rolled back (a part's cache of what they changed)."""
        self._on_rollback.append(drop)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """All or nothing; inside another transaction, part of it."""
        if self._depth:
            self._depth += 1
            try:
                yield
            except BaseException:
                self._failed = True
                raise
            finally:
                self._depth -= 1
            return
        self.conn.execute("BEGIN IMMEDIATE")
        self._depth, self._failed = 1, False
        try:
            yield
            if self._failed:
                raise StoreError(
                    "a store step failed and its exception was caught inside the transaction; "
                    "let it leave the transaction, or run the step in savepoint()"
                )
        except BaseException:
            self._depth, self._failed = 0, False
            self.conn.execute("ROLLBACK")
            self._rolled_back()
            raise
        self._depth = 0
        self.conn.execute("COMMIT")
        self.transactions += 1

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        """Inside a transaction: a step that may fail and be caught; failing undoes only it."""
        if not self._depth:
            raise StoreError("savepoint() is for a step inside a transaction")
        name, failed = f"step{self._depth}", self._failed
        self.conn.execute(f"SAVEPOINT {name}")
        self._depth += 1
        try:
            yield
        except BaseException:
            self._depth -= 1
            self._failed = failed  # what failed in the step is undone with it
            self.conn.execute(f"ROLLBACK TO {name}")
            self.conn.execute(f"RELEASE {name}")
            self._rolled_back()
            raise
        self._depth -= 1
        self.conn.execute(f"RELEASE {name}")

    def _rolled_back(self) -> None:
        for drop in self._on_rollback:
            drop()
