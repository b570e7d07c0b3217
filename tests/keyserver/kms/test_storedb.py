"""The store parts' shared connection: a transaction inside another is a savepoint of it, the
outermost commit counts once, and any rollback tells the parts to drop what they cached."""

from __future__ import annotations

import sqlite3
import uuid

import pytest

from keyserver.kms.storedb import StoreDb, ids_from_json, ids_to_json


def _db() -> tuple[StoreDb, list[str]]:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t (x INTEGER)")
    db = StoreDb(conn)
    dropped: list[str] = []
    db.on_rollback(lambda: dropped.append("dropped"))
    return db, dropped


def _rows(db: StoreDb) -> list[int]:
    return [int(r[0]) for r in db.conn.execute("SELECT x FROM t ORDER BY x")]


def test_a_failed_inner_transaction_undoes_only_itself() -> None:
    db, dropped = _db()
    with db.transaction():
        db.conn.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(ValueError), db.transaction():
            db.conn.execute("INSERT INTO t VALUES (2)")
            raise ValueError("inner fails")
        with db.transaction():
            db.conn.execute("INSERT INTO t VALUES (3)")
    assert _rows(db) == [1, 3]
    assert db.transactions == 1  # the savepoints are not transactions of their own
    assert dropped == ["dropped"]  # the failed savepoint's writes were undone: caches dropped


def test_a_failed_outer_transaction_undoes_its_committed_inner_ones() -> None:
    db, dropped = _db()
    with pytest.raises(RuntimeError), db.transaction():
        with db.transaction():
            db.conn.execute("INSERT INTO t VALUES (1)")
        raise RuntimeError("outer fails after the inner one finished")
    assert _rows(db) == [] and db.transactions == 0 and dropped == ["dropped"]
    with db.transaction():  # and the connection is usable again, outside any transaction
        db.conn.execute("INSERT INTO t VALUES (4)")
    assert _rows(db) == [4] and db.transactions == 1 and not db.conn.in_transaction


def test_key_ids_column_format_round_trips() -> None:
    ids = (uuid.uuid4(), uuid.uuid4())
    raw = ids_to_json(ids)
    assert raw == f'["{ids[0]}", "{ids[1]}"]'  # the on-disk format of the key_ids columns
    assert ids_from_json(raw) == ids
