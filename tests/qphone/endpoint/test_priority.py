"""qphone.endpoint.priority: the media thread runs real-time where permitted, else at a lower
nice value, else as it is (never required); it is put back when the media task ends, and no
process it starts inherits the real-time policy."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from qphone.endpoint.priority import PriorityKind, raise_priority

NICE_CHILD = (
    "import os, sys; from qphone.endpoint.priority import raise_priority; "
    "before = os.getpriority(os.PRIO_PROCESS, 0); got = raise_priority(); "
    "print(before, got, os.getpriority(os.PRIO_PROCESS, 0))"
)

# two media tasks on one thread (a loopback's two ends), ending in the order given by argv[1];
# a child process started while real-time; what the thread runs at before, during and after
HOLD_CHILD = """
import asyncio, json, os, subprocess, sys
from qphone.endpoint.priority import hold_media_priority

def state():
    return [os.sched_getscheduler(0) & ~os.SCHED_RESET_ON_FORK, os.getpriority(os.PRIO_PROCESS, 0)]

async def main():
    out = {"before": state()}
    go = [asyncio.Event(), asyncio.Event()]
    got = []

    async def media(i):
        got.append(hold_media_priority())
        await go[i].wait()

    tasks = [asyncio.create_task(media(0)), asyncio.create_task(media(1))]
    await asyncio.sleep(0.01)
    out["during"] = state()
    out["kind"] = got[0].kind.value
    out["describe"] = got[0].describe()
    child = "import os; print(os.sched_getscheduler(0))"
    out["child_policy"] = int(subprocess.run([sys.executable, "-c", child],
                                             capture_output=True, text=True).stdout)
    first = int(sys.argv[1])
    go[first].set()
    await tasks[first]
    await asyncio.sleep(0)
    go[1 - first].set()
    await tasks[1 - first]
    await asyncio.sleep(0)
    out["after"] = state()
    print(json.dumps(out))

asyncio.run(main())
"""


def _run(code: str, *args: str, prefix: tuple[str, ...] = ()) -> str:
    return subprocess.run(
        [*prefix, sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout


def _nice_child(prefix: tuple[str, ...] = ()) -> tuple[int, int, int]:
    before, got, after = (int(v) for v in _run(NICE_CHILD, prefix=prefix).split())
    return before, got, after


def test_the_nice_value_returned_is_the_one_in_force() -> None:
    before, got, after = _nice_child()
    assert got == after <= before
    if os.geteuid() == 0:
        assert got == -10  # permitted: the asked-for value
    assert raise_priority(nice=os.getpriority(os.PRIO_PROCESS, 0) + 5) == os.getpriority(
        os.PRIO_PROCESS, 0
    )  # asking for less than it has changes nothing


@pytest.mark.parametrize("first", ["0", "1"])
def test_the_media_task_runs_real_time_and_the_thread_is_put_back_when_it_ends(
    first: str,
) -> None:
    out = json.loads(_run(HOLD_CHILD, first))
    assert out["after"] == out["before"]  # whichever of the two media tasks ended first
    assert out["child_policy"] == os.SCHED_OTHER  # a process it starts is not real-time
    if os.geteuid() == 0:  # permitted here: SCHED_RR (the summary says so)
        assert out["kind"] == PriorityKind.REALTIME.value
        assert out["during"][0] == os.SCHED_RR
        assert out["describe"] == "real-time (SCHED_RR 10)"


SETPRIV = shutil.which("setpriv")


@pytest.mark.skipif(SETPRIV is None, reason="util-linux setpriv not installed")
def test_a_process_without_the_right_keeps_its_priority_and_goes_on() -> None:
    assert SETPRIV is not None
    # without CAP_SYS_NICE (and RLIMIT_NICE/RLIMIT_RTPRIO 0, the defaults) a process may
    # neither lower its nice value nor run real-time
    prefix = (SETPRIV, "--bounding-set=-sys_nice")
    before, got, after = _nice_child(prefix)
    assert before == got == after  # not permitted: unchanged, no error
    out = json.loads(_run(HOLD_CHILD, "0", prefix=prefix))
    assert out["kind"] == PriorityKind.UNCHANGED.value
    assert out["during"] == out["before"] == out["after"]
    assert out["describe"].startswith("default priority (real-time scheduling not permitted:")
    assert "RLIMIT_RTPRIO 0" in out["describe"]
