"""A key-holding process forbids core dumps of itself (checked in a child process)."""

from __future__ import annotations

import os
import subprocess
import sys

CHILD = """
import ctypes, ctypes.util, resource
from keyserver.coredumps import forbid_core_dumps
forbid_core_dumps()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
print(resource.getrlimit(resource.RLIMIT_CORE), libc.prctl(3, 0, 0, 0, 0))
try:
    resource.setrlimit(resource.RLIMIT_CORE, (1 << 20, 1 << 20))
    print("raised")
except (ValueError, OSError):
    print("refused")
"""


def test_no_core_file_and_not_dumpable() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert out[0] == "(0, 0) 0"  # RLIMIT_CORE soft/hard 0; PR_GET_DUMPABLE 0
    assert out[1] == "refused" or (out[1] == "raised" and os.geteuid() == 0)  # root may
