"""The record of used QKD key IDs: claims, reuse, crash safety, bounded size, the filter."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from qphone.config.usedkeys import (
    FILTER_BITS,
    Seen,
    UsedKeys,
    UsedKeysError,
    used_keys_path,
)


def test_a_claimed_id_is_refused_later_and_a_refused_claim_records_nothing(tmp_path: Path) -> None:
    path = tmp_path / "alice.toml.usedkeys"
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    with UsedKeys(path) as used:
        assert used.claim([a, b], now=1000.0) is None
        reuse = used.claim([c, b])
        assert reuse is not None and reuse.key_id == b and reuse.seen is Seen.RECORDED
        assert reuse.when == 1000.0
        assert used.seen(c) is None  # nothing of the refused claim was recorded
        dup = used.claim([c, c])  # the same ID twice in one reply
        assert dup is not None and dup.key_id == c and used.seen(c) is None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with UsedKeys(path) as again:  # it persists
        assert again.seen(a) is not None and again.claim([c]) is None


def test_a_claim_survives_sigkill_right_after_it_returns(tmp_path: Path) -> None:
    path = tmp_path / "p.usedkeys"
    kid = uuid.uuid4()
    child = (
        "import os, signal, sys, uuid\n"
        "from pathlib import Path\n"
        "from qphone.config.usedkeys import UsedKeys\n"
        f"u = UsedKeys(Path({str(path)!r}))\n"
        f"assert u.claim([uuid.UUID({str(kid)!r})]) is None\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with UsedKeys(path) as used:
        assert used.seen(kid) is not None


def test_old_ids_fold_into_the_filter_and_are_still_refused(tmp_path: Path) -> None:
    ids = [uuid.uuid4() for _ in range(100)]
    with UsedKeys(tmp_path / "u", keep=16) as used:
        for kid in ids:
            assert used.claim([kid]) is None
        assert used.recorded <= 16 + 2 and used.folded == 100 - used.recorded
        first = used.seen(ids[0])
        assert first is not None and first.seen is Seen.FILTER
        assert used.claim([ids[0]]) is not None
        assert 0.0 < used.filter_false_alarm() < 1e-12
        fresh = [uuid.uuid4() for _ in range(2000)]
        assert all(used.seen(k) is None for k in fresh)
    size = (tmp_path / "u").stat().st_size
    assert size < FILTER_BITS // 8 + 64 * 1024  # bounded: the filter and a few pages


def test_path_is_next_to_the_profile_and_an_unwritable_place_is_named(tmp_path: Path) -> None:
    assert used_keys_path(tmp_path / "a.toml", tmp_path / "x.identity") == (
        tmp_path / "a.toml.usedkeys"
    )
    assert used_keys_path(None, tmp_path / "x.identity") == tmp_path / "x.identity.usedkeys"
    with pytest.raises(UsedKeysError, match="record of used QKD key IDs"):
        UsedKeys(tmp_path / "missing" / "dir" / "u")
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(UsedKeysError):
            UsedKeys(ro / "u")


async def test_an_async_claim_leaves_the_event_loop_free_while_it_waits_for_the_disk(
    tmp_path: Path,
) -> None:
    """A call's loop must not wait for the record's disk: while another connection holds the
    file locked, the claim waits on the record's thread and the loop goes on running tasks."""
    path = tmp_path / "alice.toml.usedkeys"
    a, b = uuid.uuid4(), uuid.uuid4()
    with UsedKeys(path) as used:
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # the claim cannot commit until this ends
        claim = asyncio.ensure_future(used.aclaim([a, b]))
        ticks = 0
        for _ in range(5):  # the loop runs other work meanwhile (a blocked loop would not)
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks == 5 and not claim.done()
        holder.execute("COMMIT")
        holder.close()
        assert await claim is None
        reuse = await used.aclaim([b])
        assert reuse is not None and reuse.key_id == b and reuse.seen is Seen.RECORDED
    with UsedKeys(path) as again:  # durable: a new process on the profile still knows them
        assert again.seen(a) is not None and again.seen(b) is not None
