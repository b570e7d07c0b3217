"""``qphone`` command-line processes for the tests: start one, wait until it listens, finish it."""

from __future__ import annotations

import json
import subprocess
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
