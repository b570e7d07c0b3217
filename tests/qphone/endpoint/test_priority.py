"""qphone.endpoint.priority: the media thread's nice value lowered where permitted, never
required (an unprivileged process keeps its priority and goes on)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from qphone.endpoint.priority import raise_priority

CHILD = (
    "import os, sys; from qphone.endpoint.priority import raise_priority; "
    "before = os.getpriority(os.PRIO_PROCESS, 0); got = raise_priority(); "
    "print(before, got, os.getpriority(os.PRIO_PROCESS, 0))"
)


def _child(prefix: tuple[str, ...] = ()) -> tuple[int, int, int]:
    out = subprocess.run(
        [*prefix, sys.executable, "-c", CHILD],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    before, got, after = (int(v) for v in out)
    return before, got, after


def test_the_value_returned_is_the_one_in_force() -> None:
    before, got, after = _child()
    assert got == after <= before
    if os.geteuid() == 0:
        assert got == -10  # permitted: the asked-for value
    assert raise_priority(nice=os.getpriority(os.PRIO_PROCESS, 0) + 5) == os.getpriority(
        os.PRIO_PROCESS, 0
    )  # asking for less than it has changes nothing


SETPRIV = shutil.which("setpriv")


@pytest.mark.skipif(SETPRIV is None, reason="util-linux setpriv not installed")
def test_a_process_without_the_right_keeps_its_priority_and_goes_on() -> None:
    assert SETPRIV is not None
    # without CAP_SYS_NICE (and RLIMIT_NICE 0, the default) a process may not lower its nice
    before, got, after = _child((SETPRIV, "--bounding-set=-sys_nice"))
    assert before == got == after  # not permitted: unchanged, no error
