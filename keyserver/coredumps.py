"""Keep a key-holding process out of core dumps: no core file, no ptrace by other users.

A core dump of a module or node would write the keys it holds in memory to disk (the crash
handler's directory, or ``core`` in the working directory), where nothing ever erases them.
:func:`forbid_core_dumps` sets ``RLIMIT_CORE`` to 0 (soft and hard: the process cannot raise it
again) and, on Linux, ``prctl(PR_SET_DUMPABLE, 0)``, which also stops a core being piped to a
``core_pattern`` handler and other non-root processes from attaching to it or reading its memory.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import resource
import sys

_PR_SET_DUMPABLE = 4


def forbid_core_dumps() -> bool:
    """No core dump of this process from now on; True if the process is also non-dumpable."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name, use_errno=True)
    return int(libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)) == 0
