"""SIGTERM (``kill``, ``timeout N``) to `qphone demo` / `qphone loopback` stops the keyserver
they started: no `qkd-keyserver` process, module or node is left running, and the command
exits 130 (interrupted) with one line and no summary on stdout.

Each test finds the processes by parentage (the command's process tree, taken before the
signal, with start times so a reused PID is not mistaken); waits are bounded.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.support.paths import SAMPLES
from tests.support.qphoneprocess import Running

pytestmark = pytest.mark.slow


def _process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, start time) of every live (not zombie) process."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            table[int(entry.name)] = (int(fields[1]), fields[19])
    return table


def _descendants(pid: int) -> set[tuple[int, str]]:
    """(pid, start time) of every process below ``pid`` (children forked by a fork server
    keep the server's command line, so they are found by parentage, not by name)."""
    table = _process_table()
    found: set[tuple[int, str]] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        for child, (ppid, started) in table.items():
            if ppid == parent and (child, started) not in found:
                found.add((child, started))
                todo.append(child)
    return found


def _wait_for_children(run: Running, count: int, timeout: float = 60.0) -> None:
    """Until the keyserver and at least ``count`` of its modules/nodes run."""
    deadline = time.monotonic() + timeout
    while len(_descendants(run.proc.pid)) < 1 + count:
        assert time.monotonic() < deadline, _descendants(run.proc.pid)
        time.sleep(0.2)


def _alive(procs: set[tuple[int, str]]) -> set[tuple[int, str]]:
    table = _process_table()
    return {(pid, started) for pid, started in procs if table.get(pid, (0, ""))[1] == started}


def _none_left(procs: set[tuple[int, str]], timeout: float = 45.0) -> set[tuple[int, str]]:
    deadline = time.monotonic() + timeout
    while (left := _alive(procs)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def _stopped_cleanly(run: Running, command: str) -> None:
    tree = _descendants(run.proc.pid)  # before the signal: orphans would leave the tree
    assert tree
    run.signal(signal.SIGTERM)
    rc, summary, err = run.finish(timeout=60)
    assert _none_left(tree) == set()
    assert rc == 130, err
    assert summary == {}, summary  # interrupted: nothing on stdout
    assert f"qphone {command}: interrupted" in err
    assert "Traceback" not in err


def test_sigterm_to_demo_stops_its_keyserver(tmp_path: Path) -> None:
    demo = Running("demo", "--mode", "aes", "--seconds", "30", "--dir", str(tmp_path), "--json")
    try:
        demo.wait_for("starting the keyserver pair")
        _wait_for_children(demo, 2)  # the modules or nodes of the pair are up
        _stopped_cleanly(demo, "demo")
    finally:
        demo.kill()


def test_sigterm_to_loopback_stops_its_keyserver(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # the run's work directory goes there
    loopback = Running(
        "loopback",
        str(SAMPLES / "speech_a_16k.wav"),
        "--out",
        str(tmp_path / "out.wav"),
        "--report",
        str(tmp_path / "report.json"),
        "--quiet",
        "--json",
        env=env,
    )
    try:
        _wait_for_children(loopback, 2)
        _stopped_cleanly(loopback, "loopback")
        assert not (tmp_path / "report.json").exists()
    finally:
        loopback.kill()
