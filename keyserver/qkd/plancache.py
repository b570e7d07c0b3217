"""A link's plan (:func:`keyserver.qkd.finitekey.optimised`), computed once per distinct link.

The plan (intensities, probabilities, block size for the link's distance and devices) costs a
transmitter module 0.1-0.4 CPU-s of numerical optimisation. A network of 171 links starts 171
transmitters at once, and half of hefei-metro-full's links share their parameters with another
(86 distinct): with a cache directory (``[module] plan_cache``, the launcher's
``DIR/plans``), the first module to need a plan computes it and writes it there (under a file
lock, so a second module with the same parameters waits for it instead of computing it too),
and every other reads it. A plan is a pure function of the parameters, so a cached one is the
one the module would compute; the file is named by the SHA-256 of the parameters and of
:data:`VERSION`, and one that does not parse, or whose inputs differ from the parameters
asked for, is computed again (and rewritten).

The optimisation runs in a thread of its own at a lower CPU priority (``nice`` 10 for that
thread only, Linux): while hundreds of processes start, the event loops of the nodes and
modules (syncs, polls, sessions) preempt it. (Not 19: on a machine busy with other work, a
nice-19 thread gets about 1.5 % of a normal one's share, and the links would wait minutes for
their plans.)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import threading
from pathlib import Path

from keyserver.qkd.finitekey import optimised
from keyserver.qkd.physics import LinkParams

VERSION = 1  # bump when optimised() would give another plan for the same parameters
# what the plan chooses; every other field of a cached plan must equal the parameters asked for
PLANNED = frozenset(
    {"mu", "nu", "p_signal", "p_decoy", "p_z", "block_pulses", "frame_pulses", "optimise"}
)
LOW_PRIORITY = 10


def cache_key(params: LinkParams) -> str:
    """The file name of `params`' plan."""
    text = json.dumps(
        {"version": VERSION, **dataclasses.asdict(params)}, sort_keys=True, allow_nan=False
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _read(path: Path, params: LinkParams) -> LinkParams | None:
    """The cached plan at `path` for `params`, or None (absent, unreadable, not this link's)."""
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    asked = dataclasses.asdict(params)
    if not isinstance(obj, dict) or set(obj) != set(asked):
        return None
    for name, value in obj.items():
        if type(value) is not type(asked[name]):
            return None
        if name not in PLANNED and value != asked[name]:
            return None
    try:
        return LinkParams(**obj)
    except (TypeError, ValueError):
        return None


def _write(path: Path, plan: LinkParams) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(dataclasses.asdict(plan), f, sort_keys=True, allow_nan=False)
    os.replace(tmp, path)


def planned(params: LinkParams, cache_dir: Path | None) -> LinkParams:
    """``optimised(params)``, from `cache_dir` when a module computed it before (blocking)."""
    if cache_dir is None or not params.optimise:
        return optimised(params)
    cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = cache_dir / f"{cache_key(params)}.json"
    hit = _read(path, params)
    if hit is not None:
        return hit
    fd = os.open(cache_dir / f"{path.stem}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a module computing the same plan: wait for it
        hit = _read(path, params)
        if hit is not None:
            return hit
        plan = optimised(params)
        with contextlib.suppress(OSError):  # a cache that cannot be written: computed anyway
            _write(path, plan)
        return plan
    finally:
        os.close(fd)


def _low_priority() -> None:
    """This thread (only) at a lower CPU priority; where that is refused, as it was."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOW_PRIORITY)


async def planned_in_background(params: LinkParams, cache_dir: Path | None) -> LinkParams:
    """:func:`planned` in a new low-priority thread (not the loop's executor: its threads
    would keep the priority)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[LinkParams] = loop.create_future()

    def settle(result: LinkParams | None, error: BaseException | None) -> None:
        if done.done():
            return
        if error is not None:
            done.set_exception(error)
        else:
            assert result is not None
            done.set_result(result)

    def work() -> None:
        _low_priority()
        result, error = None, None
        try:
            result = planned(params, cache_dir)
        except Exception as e:  # handed to the awaiting coroutine
            error = e
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name="link-plan", daemon=True).start()
    return await done
