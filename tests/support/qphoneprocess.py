"""``qphone`` command-line processes for the tests: start one, wait until it listens, finish it."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from typing import Any

from tests.support.paths import BIN


def qphone(*args: str) -> subprocess.Popen[bytes]:
    """Start ``qphone ARGS...`` with stdout and stderr piped."""
    return subprocess.Popen(
        [str(BIN / "qphone"), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def answering(*args: str, timeout: float = 60.0) -> tuple[subprocess.Popen[bytes], list[str]]:
    """Start `qphone answer ...` and return once it listens (its stderr says so)."""
    proc = qphone("answer", *args)
    assert proc.stderr is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline().decode()
        if not line:
            break
        seen.append(line)
        if "waiting for a call" in line:
            return proc, seen
    proc.kill()
    raise RuntimeError("qphone answer did not start listening: " + "".join(seen))


def finish(proc: subprocess.Popen[bytes], timeout: float = 60) -> tuple[int, dict[str, Any], str]:
    """Wait for the process; return (exit code, its ``--json`` summary or {}, its stderr)."""
    out, err = proc.communicate(timeout=timeout)
    text = out.decode().strip().splitlines()
    summary = json.loads(text[-1]) if text and text[-1].startswith("{") else {}
    return proc.returncode, summary, err.decode()


class Running:
    """A ``qphone`` process whose stderr is read line by line as it comes (a reader thread),
    so that a test can wait for a line, act (e.g. send a signal), then collect the rest."""

    def __init__(
        self, *args: str, stdin: int | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.proc = subprocess.Popen(
            [str(BIN / "qphone"), *args],
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace")
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, text: str, timeout: float = 60.0) -> str:
        """Return the first stderr line (from now on) that contains ``text``."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self._queue.get(timeout=max(0.01, left))
            except queue.Empty:
                line = ""
            if line is None or left <= 0:
                raise AssertionError(f"no line with {text!r}; stderr so far:\n{self.stderr}")
            if text in line:
                return line

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def finish(self, timeout: float = 30.0) -> tuple[int, dict[str, Any], str]:
        """Wait for the exit; (exit code, the last stdout line as JSON or {}, all stderr)."""
        assert self.proc.stdout is not None
        try:
            rc = self.proc.wait(timeout=timeout)
        finally:
            self.kill()
        out = self.proc.stdout.read().decode().strip().splitlines()
        self._reader.join(5)
        summary = json.loads(out[-1]) if out and out[-1].startswith("{") else {}
        return rc, summary, self.stderr

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
