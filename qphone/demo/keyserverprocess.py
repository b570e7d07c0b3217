"""``qkd-keyserver demo`` as a child process: how qphone's demo, loopback and benchmarks get KMEs.

qphone never imports the keyserver: it starts ``qkd-keyserver demo`` (PKI, two KME processes
and the simulated BB84 link) as a subprocess, waits for its ``demo.json``, and talks to the KMEs
only through ETSI GS QKD 014 (:mod:`qphone.kmeclient`) with the profiles the demo writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from qphone.config.profile import load_profile
from qphone.endpoint.preflight import wait_for_key


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def installed_script(name: str) -> str:
    """The console script ``name`` of this Python environment (else: ``name`` on the PATH)."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else name


@contextlib.contextmanager
def running_keyserver(
    directory: Path,
    extra: list[str],
    timeout: float = 240.0,
    on_wait: Callable[[], None] | None = None,
) -> Iterator[Path]:
    """Run ``qkd-keyserver demo --dir DIRECTORY`` until the block ends; yield once its KMEs
    hold key (a fresh QKD link needs a while for its first) or report an eavesdropper.
    ``on_wait`` is called once if that takes a moment."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "demo.json").unlink(missing_ok=True)
    log = open(directory / "keyserver-demo.log", "wb")  # noqa: SIM115 - closed below
    cmd = [
        installed_script("qkd-keyserver"),
        "demo",
        "--dir",
        str(directory),
        "--port-a",
        str(free_port()),
        "--port-b",
        str(free_port()),
        *extra,
    ]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not (directory / "demo.json").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "the keyserver demo did not start; see " + str(directory / "keyserver-demo.log")
                )
            time.sleep(0.2)
        left = max(1.0, deadline - time.monotonic())
        profile = load_profile(directory / "alice.toml")
        if asyncio.run(wait_for_key(profile, left, on_wait=on_wait)) is None:
            raise RuntimeError(
                f"the keyserver demo delivered no key within {timeout:g} s; see "
                + str(directory / "keyserver-demo.log")
            )
        yield directory
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
