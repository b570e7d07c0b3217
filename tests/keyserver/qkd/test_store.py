"""The module store under the module's real concurrency: worker threads store and commit blocks
while the event loop's northbound API takes keys (one SQLite connection, one lock)."""

from __future__ import annotations

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
