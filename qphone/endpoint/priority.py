"""The media thread's scheduling priority: raised when the system allows it, never required.

A call's send and receive paths run on one event loop and must be on time every 20 ms; on a
machine whose cores are busy, the kernel's fair scheduler makes them wait for other runnable
processes (tens of milliseconds), which the far end hears as late frames.  A lower nice value
only weighs the fair share (a nice -10 thread still waits behind two busy loops for whole
scheduler slices); what telephony does is run the audio path under a real-time policy:
PulseAudio and PipeWire ask rtkit for ``SCHED_RR``/``SCHED_FIFO`` within ``RLIMIT_RTPRIO``,
WebRTC raises its audio threads' priority.  So the thread that runs the media path asks, in
this order:

1. ``SCHED_RR`` at :data:`MEDIA_RT_PRIORITY` (root, ``CAP_SYS_NICE`` or an ``RLIMIT_RTPRIO``
   that allows it), with ``SCHED_RESET_ON_FORK`` so that no process or thread it starts
   inherits it;
2. else a lower nice value (:data:`MEDIA_NICE`, as far as ``RLIMIT_NICE`` allows);
3. else nothing: the call runs as it is.

:func:`hold_media_priority` holds it while one asyncio task runs and puts the thread back
when the task is done (a loopback's analysis after the call must not run real-time).  The
kernel's real-time throttling (``sched_rt_runtime_us``, 95 % of each second by default) keeps
a runaway real-time thread from taking a core whole.  Linux applies both calls to the calling
thread only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import os

MEDIA_NICE = -10  # the nice value asked for (weight about 10x a default process's)
#: SCHED_RR priority asked for: above every default process, below the kernel's threaded
#: interrupts (50) and the audio servers' data threads (rtkit's default ceiling is 20)
MEDIA_RT_PRIORITY = 10


class PriorityKind(enum.StrEnum):
    REALTIME = "realtime"  # SCHED_RR
    NICE = "nice"  # fair scheduling at a lower nice value
    UNCHANGED = "unchanged"  # neither was permitted


@dataclasses.dataclass(frozen=True)
class MediaPriority:
    """What the media thread got: the policy, its value (SCHED_RR priority or nice value) and,
    when it is not real-time, why not."""

    kind: PriorityKind
    value: int
    refused: str = ""

    def describe(self) -> str:
        """One line for the call's summary."""
        if self.kind is PriorityKind.REALTIME:
            return f"real-time (SCHED_RR {self.value})"
        shown = f"nice {self.value}" if self.kind is PriorityKind.NICE else "default priority"
        return f"{shown} (real-time scheduling not permitted: {self.refused})"


@dataclasses.dataclass(frozen=True)
class _ThreadScheduling:
    policy: int
    priority: int
    nice: int

    @classmethod
    def now(cls) -> _ThreadScheduling:
        return cls(
            os.sched_getscheduler(0) & ~_RESET_ON_FORK,
            os.sched_getparam(0).sched_priority,
            os.getpriority(os.PRIO_PROCESS, 0),
        )

    def apply(self) -> None:
        if self.policy == os.SCHED_OTHER or self.priority == 0:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        else:
            os.sched_setscheduler(0, self.policy | _RESET_ON_FORK, os.sched_param(self.priority))
        os.setpriority(os.PRIO_PROCESS, 0, self.nice)


_RESET_ON_FORK = getattr(os, "SCHED_RESET_ON_FORK", 0)


def raise_priority(nice: int = MEDIA_NICE) -> int:
    """Lower the calling thread's nice value to ``nice`` where permitted, step by step as far
    as the limits allow; return the nice value it runs at now (unchanged if not permitted)."""
    current = os.getpriority(os.PRIO_PROCESS, 0)
    target = current
    for value in range(nice, current):  # from the lowest asked for up to the current one
        try:
            os.setpriority(os.PRIO_PROCESS, 0, value)
        except (PermissionError, OSError):
            continue
        target = value
        break
    return target


def raise_media_priority(
    rt_priority: int | None = MEDIA_RT_PRIORITY, nice: int = MEDIA_NICE
) -> MediaPriority:
    """Real-time scheduling for the calling thread where permitted (``rt_priority`` None: do
    not ask), else a lower nice value where permitted, else nothing; what it got."""
    refused = "not asked for"
    if rt_priority is not None:
        try:
            os.sched_setscheduler(0, os.SCHED_RR | _RESET_ON_FORK, os.sched_param(rt_priority))
        except PermissionError:
            refused = f"RLIMIT_RTPRIO {_rtprio_limit()} and no CAP_SYS_NICE"
        except (OSError, AttributeError) as exc:  # no such policy here (not Linux)
            refused = f"SCHED_RR unavailable ({exc.__class__.__name__})"
        else:
            return MediaPriority(PriorityKind.REALTIME, rt_priority)
    before = os.getpriority(os.PRIO_PROCESS, 0)
    got = raise_priority(nice)
    kind = PriorityKind.NICE if got < before or got <= nice else PriorityKind.UNCHANGED
    return MediaPriority(kind, got, refused)


def _rtprio_limit() -> str:
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_RTPRIO)
    except (ImportError, AttributeError, OSError):  # not Linux
        return "unknown"
    return "unlimited" if soft == resource.RLIM_INFINITY else str(soft)


def hold_media_priority(
    task: asyncio.Task[object] | None = None,
    rt_priority: int | None = MEDIA_RT_PRIORITY,
    nice: int = MEDIA_NICE,
) -> MediaPriority:
    """Raise the calling thread's priority (:func:`raise_media_priority`) while ``task`` (the
    current task by default) runs; when it is done the thread gets back the scheduling it had,
    unless something changed it since (so two media paths on one thread, as in a loopback,
    put it back whichever ends first)."""
    task = task or asyncio.current_task()
    before = _ThreadScheduling.now()
    got = raise_media_priority(rt_priority, nice)
    raised = _ThreadScheduling.now()
    if task is not None and raised != before:

        def restore(_: object) -> None:
            if _ThreadScheduling.now() == raised:
                with contextlib.suppress(OSError):  # going down is always allowed
                    before.apply()

        task.add_done_callback(restore)
    return got
