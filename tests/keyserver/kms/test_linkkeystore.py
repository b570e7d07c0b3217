"""Link-key streams as a store part: a step that fails in a savepoint of a caller's transaction
undoes only itself, and the in-memory stock stays in step with the blocks."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from keyserver.kms.linkkeystore import OutOfLinkKey, Spend
from tests.keyserver.kms.test_node_core import LINK, pair, share_keys


def _unspent(path: Path, owner: str) -> int:
    db = sqlite3.connect(f"file:{path}?immutable=1", uri=True)  # the store holds its lock
    try:
        row = db.execute(
            "SELECT COALESCE(SUM(unspent), 0) FROM blocks WHERE link=? AND owner=?", (LINK, owner)
        ).fetchone()
    finally:
        db.close()
    return int(row[0])


def test_a_failed_step_in_a_savepoint_undoes_only_itself(tmp_path: Path) -> None:
    a, b = pair(tmp_path)
    share_keys(a, b, 8)
    before = b.link_keys.stock_bytes(LINK, "b")
    theirs = b.link_keys.stock_bytes(LINK, "a")  # both counts now kept in memory
    with b.transaction():
        [sl] = b.link_keys.spend([Spend(LINK, "b", 100)])
        with pytest.raises(OutOfLinkKey), b.savepoint():  # consumes a's slice, cannot spend
            b.link_keys.forward((LINK, "a", 0, 64), Spend(LINK, "b", 10**6))
    assert b.link_keys.stock_bytes(LINK, "b") == before - 100 == _unspent(b.path, "b")
    assert b.link_keys.stock_bytes(LINK, "a") == theirs == _unspent(b.path, "a")
    assert b.link_keys.peek(LINK, "a", 0, 64)  # a's slice was not consumed
    assert b.link_keys.view(LINK, "b").cursor == sl.start + 100
    a.close()
    b.close()
