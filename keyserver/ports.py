"""Free TCP ports for listeners that bind later (another process, seconds from now).

A port the kernel hands out for ``bind(("127.0.0.1", 0))`` comes from its ephemeral range,
the same range it takes outgoing connections' local ports from: between choosing such a port
and a module binding it, any process's outgoing connection may take it (the suite saw
``[Errno 98] address already in use`` that way). Ports are therefore chosen below the
ephemeral range, where only listeners bind, and held bound together while choosing so none
repeats; the scan starts at a random port, so two callers at once rarely probe the same ones.
"""

from __future__ import annotations

import secrets
import socket
from pathlib import Path

HOST = "127.0.0.1"
LOWEST_PORT = 10_000
_DEFAULT_EPHEMERAL = (32768, 60999)


def ephemeral_ports() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (Linux; a default elsewhere)."""
    try:
        lo, hi = (
            int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        )
    except (OSError, ValueError):
        return _DEFAULT_EPHEMERAL
    return lo, hi


def free_ports(n: int, avoid: set[int] | None = None, host: str = HOST) -> list[int]:
    """`n` distinct ports nobody listens on, below the kernel's ephemeral range (the kernel's
    own choice when there is no room there)."""
    avoid = avoid or set()
    lo, _ = ephemeral_ports()
    span = lo - LOWEST_PORT
    if span < 2 * n:
        return _kernel_ports(n, avoid, host)
    socks: list[socket.socket] = []
    out: list[int] = []
    start = secrets.randbelow(span)
    try:
        for i in range(span):
            if len(out) == n:
                break
            port = LOWEST_PORT + (start + i) % span
            if port in avoid:
                continue
            s = socket.socket()
            try:
                s.bind((host, port))
            except OSError:
                s.close()
                continue
            socks.append(s)
            out.append(port)
    finally:
        for s in socks:
            s.close()
    return out if len(out) == n else _kernel_ports(n, avoid, host)


def free_port(host: str = HOST) -> int:
    """One port as :func:`free_ports` chooses them."""
    return free_ports(1, host=host)[0]


def _kernel_ports(n: int, avoid: set[int], host: str) -> list[int]:
    socks: list[socket.socket] = []
    out: list[int] = []
    try:
        while len(out) < n:
            s = socket.socket()
            socks.append(s)
            s.bind((host, 0))
            port = int(s.getsockname()[1])
            if port not in avoid:
                out.append(port)
    finally:
        for s in socks:
            s.close()
    return out
