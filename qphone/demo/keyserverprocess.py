"""The keyserver as a child process: how qphone's demo, loopback and benchmarks get KMEs.

qphone never imports the keyserver: it starts ``qkd-keyserver demo`` (two KMS nodes joined by
one QKD link, with their PKI) or ``qkd-keyserver network --topology NAME`` (a whole network of
trusted nodes) as a subprocess, waits for its ``demo.json`` / ``network.json`` and for key, and
talks to the KMEs only through ETSI GS QKD 014 (:mod:`qphone.kmeclient`) with the profiles the
keyserver writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import secrets
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
    """A TCP port on 127.0.0.1 that nobody listens on right now, for a listener another process
    binds seconds later: chosen at random below the kernel's ephemeral range, which outgoing
    connections draw their local ports from (a port the kernel picks for ``bind(0)`` comes from
    that range, and any outgoing connection may take it before the listener binds)."""
    try:
        lowest_ephemeral = int(
            Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0]
        )
    except (OSError, ValueError, IndexError):
        lowest_ephemeral = 32768
    for _ in range(64):
        port = 10_000 + secrets.randbelow(max(1, lowest_ephemeral - 10_000))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # nothing free below the range: the kernel's choice
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def installed_script(name: str) -> str:
    """The console script ``name`` of this Python environment (else: ``name`` on the PATH)."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else name


def _stop_with_parent() -> None:  # runs in the child between fork and exec
    """The keyserver gets SIGTERM if qphone dies without stopping it (SIGKILL, a crash): it
    then stops its modules and nodes as on Ctrl-C (Linux ``PR_SET_PDEATHSIG``)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@contextlib.contextmanager
def running_keyserver(
    directory: Path,
    extra: list[str],
    timeout: float = 240.0,
    on_wait: Callable[[], None] | None = None,
) -> Iterator[Path]:
    """Run ``qkd-keyserver demo --dir DIRECTORY`` until the block ends; yield once its KMEs
    hold key (a fresh QKD link needs a while for its first) or report an eavesdropper.
    ``on_wait`` is called once if that takes a moment.  The profiles are ``DIRECTORY/*.toml``."""
    cmd = ["demo", "--dir", str(directory), "--port-a", str(free_port())]
    cmd += ["--port-b", str(free_port()), *extra]
    with _running(cmd, directory, "demo.json", directory / "alice.toml", timeout, on_wait):
        yield directory


@contextlib.contextmanager
def running_network(
    topology: str,
    directory: Path,
    extra: list[str],
    caller: str = "alice",
    timeout: float = 900.0,
    on_wait: Callable[[], None] | None = None,
) -> Iterator[Path]:
    """Run ``qkd-keyserver network --topology TOPOLOGY --dir DIRECTORY`` (a QKD module pair on
    every link, a KMS node per site) until the block ends; yield the directory of its qphone
    profiles (``DIRECTORY/saes``) once ``caller``'s KMS node can relay key to its peer's."""
    cmd = ["network", "--topology", topology, "--dir", str(directory), *extra]
    profile = directory / "saes" / f"{caller}.toml"
    with _running(cmd, directory, "network.json", profile, timeout, on_wait, "network.log"):
        yield directory / "saes"


@contextlib.contextmanager
def _running(
    args: list[str],
    directory: Path,
    ready_file: str,
    profile_path: Path,
    timeout: float,
    on_wait: Callable[[], None] | None,
    log_name: str = "keyserver-demo.log",
) -> Iterator[None]:
    """``qkd-keyserver ARGS`` in its own process group, stopped (SIGTERM, then SIGKILL) at the
    end, also when the block ends by KeyboardInterrupt (``qphone`` turns SIGTERM into one);
    and, should qphone die without that, by the kernel (see :func:`_stop_with_parent`).  Ready
    once ``DIRECTORY/READY_FILE`` exists and the profile's KME holds key."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / ready_file).unlink(missing_ok=True)
    log_path = directory / log_name
    log = open(log_path, "wb")  # noqa: SIM115 - closed below
    cmd = [installed_script("qkd-keyserver"), *args]
    proc = subprocess.Popen(
        cmd,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_stop_with_parent,  # only prctl between fork and exec
    )
    try:
        deadline = time.monotonic() + timeout
        while not (directory / ready_file).exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"`qkd-keyserver {args[0]}` did not start; see {log_path}")
            time.sleep(0.2)
        left = max(1.0, deadline - time.monotonic())
        profile = load_profile(profile_path)
        if asyncio.run(wait_for_key(profile, left, on_wait=on_wait)) is None:
            raise RuntimeError(
                f"`qkd-keyserver {args[0]}` delivered no key within {timeout:g} s; see {log_path}"
            )
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
