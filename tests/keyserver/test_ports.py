"""Ports for listeners that bind later: below the ephemeral range, distinct, free."""

from __future__ import annotations

import socket

from keyserver.ports import LOWEST_PORT, ephemeral_ports, free_port, free_ports


def test_ports_are_distinct_free_and_below_the_ephemeral_range() -> None:
    lo, hi = ephemeral_ports()
    assert LOWEST_PORT < lo <= hi
    avoid = set(range(LOWEST_PORT, LOWEST_PORT + 500))
    ports = free_ports(40, avoid)
    assert len(set(ports)) == 40
    assert not avoid & set(ports)
    assert all(LOWEST_PORT <= p < lo for p in ports)
    for p in ports:  # nobody holds them
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))
    assert LOWEST_PORT <= free_port() < lo


def test_a_port_someone_listens_on_is_never_chosen() -> None:
    lo, _ = ephemeral_ports()
    held: list[socket.socket] = []
    try:
        for p in free_ports(200):
            s = socket.socket()
            s.bind(("127.0.0.1", p))
            s.listen()
            held.append(s)
        taken = {s.getsockname()[1] for s in held}
        again = free_ports(200)
        assert not taken & set(again)
        assert all(p < lo for p in again)
    finally:
        for s in held:
            s.close()
