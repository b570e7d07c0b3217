"""The demo's ports for listeners another process binds later."""

from __future__ import annotations

import socket
from pathlib import Path

from qphone.demo.keyserverprocess import free_port


def test_free_port_is_below_the_ephemeral_range_and_free() -> None:
    lowest = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = {free_port() for _ in range(20)}
    assert len(ports) > 1  # chosen at random, not one fixed port
    for p in ports:
        assert 10_000 <= p < lowest
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))
