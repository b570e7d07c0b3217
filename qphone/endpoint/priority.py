"""The media thread's scheduling priority: raised when the system allows it, never required.

A call's send and receive paths run on one event loop and must be on time every 20 ms; on a
machine whose cores are busy, the kernel's fair scheduler makes them wait for other runnable
processes (tens of milliseconds), which the far end hears as late frames.  Like the audio
threads of WebRTC or PulseAudio (rtkit), the thread that runs the media path asks for a higher
priority: a lower nice value (Linux applies it to the calling thread, and threads it starts
later inherit it).  Where that is not permitted (an unprivileged user beyond RLIMIT_NICE) the
call runs as it is: nothing here needs root.
"""

from __future__ import annotations

import os

MEDIA_NICE = -10  # the nice value asked for (weight about 10x a default process's)


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
