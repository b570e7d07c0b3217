"""Busy loops beside a measurement: the machine's cores taken, as a user's other work takes them.

:func:`busy_loops` starts ``count`` processes that spin (pure Python ``while True``) at the
default priority and stops them when the ``with`` block ends, however it ends.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

SPIN = "while True:\n    pass\n"


@contextmanager
def busy_loops(count: int) -> Iterator[list[int]]:
    """``count`` spinning processes for the duration of the block; yields their pids."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(count):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", SPIN],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
