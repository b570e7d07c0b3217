"""SIGTERM (``kill``, ``timeout N``) to `qphone demo` / `qphone loopback` stops the keyserver
they started: no `qkd-keyserver` process, module or node is left running, and the command
exits 130 (interrupted) with one line and no summary on stdout.

Each test finds the processes by their command line, which names the test's directory (the
keyserver's ``--dir`` and every child's ``--config``); waits are bounded.
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


def _processes_under(directory: Path) -> list[str]:
    """Command lines of the running processes that name ``directory``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and str(directory).encode() in raw:
            found.append(raw.replace(b"\0", b" ").decode(errors="replace").strip())
    return found


def _wait_for_children(directory: Path, count: int, timeout: float = 60.0) -> None:
    """Until the keyserver and at least ``count`` of its modules/nodes run."""
    deadline = time.monotonic() + timeout
    while len(_processes_under(directory)) < 1 + count:
        assert time.monotonic() < deadline, _processes_under(directory)
        time.sleep(0.2)


def _none_left(directory: Path, timeout: float = 45.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := _processes_under(directory)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def _stopped_cleanly(run: Running, directory: Path, command: str) -> None:
    run.signal(signal.SIGTERM)
    rc, summary, err = run.finish(timeout=60)
    assert _none_left(directory) == []
    assert rc == 130, err
    assert summary == {}, summary  # interrupted: nothing on stdout
    assert f"qphone {command}: interrupted" in err
    assert "Traceback" not in err


def test_sigterm_to_demo_stops_its_keyserver(tmp_path: Path) -> None:
    demo = Running("demo", "--mode", "aes", "--seconds", "30", "--dir", str(tmp_path), "--json")
    try:
        demo.wait_for("starting the keyserver pair")
        _wait_for_children(tmp_path, 2)  # the modules or nodes of the pair are up
        _stopped_cleanly(demo, tmp_path, "demo")
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
        _wait_for_children(tmp_path, 2)
        _stopped_cleanly(loopback, tmp_path, "loopback")
        assert not (tmp_path / "report.json").exists()
    finally:
        loopback.kill()
