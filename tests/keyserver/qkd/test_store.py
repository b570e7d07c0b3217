"""The module store under the module's real concurrency: worker threads store and commit blocks
while the event loop's northbound API takes keys (one SQLite connection, one lock)."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import uuid
from pathlib import Path

from keyserver.qkd.store import ModuleStore


def test_blocks_stored_in_a_thread_while_keys_are_taken(tmp_path: Path) -> None:
    store = ModuleStore(tmp_path)
    blocks, per_block = 200, 8
    made: set[uuid.UUID] = set()
    errors: list[BaseException] = []

    def producer() -> None:
        try:
            for b in range(blocks):
                keys = [(uuid.uuid4(), bytes([b % 256]) * 32) for _ in range(per_block)]
                made.update(k for k, _ in keys)
                store.store_block(b, keys, (b"", b""), committed=False)
                store.commit_blocks_upto(b)
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=producer)
    thread.start()
    taken: list[uuid.UUID] = []
    while thread.is_alive() or store.key_count():
        taken.extend(k for k, _ in store.take_keys(3))
        if not thread.is_alive() and store.key_count() < 3:
            break
    thread.join()
    assert errors == []
    left = store.key_count()
    assert len(taken) + left == blocks * per_block
    assert len(set(taken)) == len(taken) and set(taken) <= made
    store.close()


def _files(directory: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in directory.iterdir() if f.is_file()}


def test_keys_handed_out_leave_every_file_at_commit(tmp_path: Path) -> None:
    """Taken (transmitter) and got (receiver) keys are in no file of the store once the call
    returns; keys still in stock are; no WAL, journal or temporary file is left; files 0600."""
    store = ModuleStore(tmp_path)
    keys = [(uuid.uuid4(), os.urandom(128)) for _ in range(40)]
    store.store_block(0, keys[:20], (os.urandom(64), os.urandom(64)), committed=True)
    store.store_block(1, keys[20:], (b"", b""), committed=True)
    taken = store.take_keys(15)
    got = store.get_keys([k for k, _ in keys[30:35]])
    assert got is not None and len(taken) == 15
    gone = [m for _, m in taken] + [m for _, m in got]
    kept = [m for k, m in keys[15:30]]
    files = _files(tmp_path)
    assert set(files) == {"module.sqlite"}
    assert not any(
        m[i : i + 8] in data for m in gone for i in range(0, 121, 8) for data in files.values()
    )
    assert all(m in files["module.sqlite"] for m in kept)
    assert stat.S_IMODE((tmp_path / "module.sqlite").stat().st_mode) == 0o600
    store.close()


def test_a_store_left_in_wal_mode_is_converted(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "module.sqlite")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)")
    db.execute("INSERT INTO meta VALUES ('x', '1')")
    db.commit()
    db.close()
    store = ModuleStore(tmp_path)
    assert store.get("x") == 1
    store.close()
    assert set(_files(tmp_path)) == {"module.sqlite"}
