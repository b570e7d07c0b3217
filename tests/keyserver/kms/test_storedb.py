"""The store parts' shared connection: a transaction inside another joins it (one commit,
counted once), a failure inside it fails the whole even if caught, a savepoint undoes only its
step, and any rollback tells the parts to drop what they cached."""

from __future__ import annotations

import sqlite3
import uuid

import pytest

from keyserver.kms.storedb import StoreDb, StoreError, ids_from_json, ids_to_json


def _db() -> tuple[StoreDb, list[str]]:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t (x INTEGER)")
    db = StoreDb(conn)
    dropped: list[str] = []
    db.on_rollback(lambda: dropped.append("dropped"))
    return db, dropped


def _rows(db: StoreDb) -> list[int]:
    return [int(r[0]) for r in db.conn.execute("SELECT x FROM t ORDER BY x")]


def _insert(db: StoreDb, x: int, fail: bool = False) -> None:
    """A part's write: one transaction of its own, or part of the caller's."""
    with db.transaction():
        db.conn.execute("INSERT INTO t VALUES (?)", (x,))
        if fail:
            raise ValueError(f"step {x} fails")


def test_nested_transactions_join_the_outer_one() -> None:
    db, dropped = _db()
    with db.transaction():
        _insert(db, 1)
        _insert(db, 2)
        assert db.transactions == 0  # nothing committed yet
    assert _rows(db) == [1, 2] and db.transactions == 1 and dropped == []
    with pytest.raises(RuntimeError), db.transaction():
        _insert(db, 3)
        raise RuntimeError("the caller's next step fails")
    assert _rows(db) == [1, 2] and db.transactions == 1 and dropped == ["dropped"]


def test_a_failed_step_caught_inside_the_transaction_still_fails_it() -> None:
    db, dropped = _db()
    with pytest.raises(StoreError, match="savepoint"), db.transaction():
        _insert(db, 1)
        with pytest.raises(ValueError):
            _insert(db, 2, fail=True)  # its row is written: the transaction is half done
    assert _rows(db) == [] and db.transactions == 0 and dropped == ["dropped"]
    _insert(db, 4)  # the connection is usable again, outside any transaction
    assert _rows(db) == [4] and not db.conn.in_transaction


def test_a_savepoint_undoes_only_its_step() -> None:
    db, dropped = _db()
    with db.transaction():
        _insert(db, 1)
        with pytest.raises(ValueError), db.savepoint():
            _insert(db, 2, fail=True)
        with db.savepoint():
            _insert(db, 3)
    assert _rows(db) == [1, 3] and db.transactions == 1
    assert dropped == ["dropped"]  # the undone step's writes: caches dropped
    with pytest.raises(StoreError):  # a savepoint belongs inside a transaction
        db.savepoint().__enter__()


def test_key_ids_column_format_round_trips() -> None:
    ids = (uuid.uuid4(), uuid.uuid4())
    raw = ids_to_json(ids)
    assert raw == f'["{ids[0]}", "{ids[1]}"]'  # the on-disk format of the key_ids columns
    assert ids_from_json(raw) == ids
