"""Heartbeat: ping/pong on an unreliable data channel, for the RTT and to notice a vanished peer.

It runs on an unreliable, unordered data channel (negotiated id 1, ``maxRetransmits=0``) that
:meth:`Heartbeat.open` creates on the peer connection.  Message: ``kind (u8: 1 ping, 2 pong) ||
stamp (u64, the pinger's monotonic ns)``.  Each side pings every ``interval`` seconds and answers
pings with a pong carrying the same stamp; a pong gives one RTT sample (smoothed, EWMA 0.2).  Any
packet from the peer (media, control, heartbeat) counts as a sign of life:
:meth:`Heartbeat.heard`.  :meth:`Heartbeat.run` returns the reason when nothing was heard for
``peer_timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time

from aiortc import RTCDataChannel, RTCPeerConnection

HEARTBEAT_CHANNEL_ID = 1
_MESSAGE = struct.Struct(">BQ")
_PING, _PONG = 1, 2


class Heartbeat:
    def __init__(self, interval: float, peer_timeout: float) -> None:
        self.interval = interval
        self.peer_timeout = peer_timeout
        self.channel: RTCDataChannel | None = None
        self.rtt: float | None = None
        """Smoothed round-trip time in seconds (None before the first pong)."""
        self.last_heard = time.monotonic()

    def open(self, pc: RTCPeerConnection) -> None:
        """Create the heartbeat data channel on ``pc`` (both ends, negotiated id 1)."""
        channel = pc.createDataChannel(
            "qphone-heartbeat",
            negotiated=True,
            id=HEARTBEAT_CHANNEL_ID,
            ordered=False,
            maxRetransmits=0,
        )
        channel.on("message", self.on_message)
        self.channel = channel

    def heard(self) -> None:
        self.last_heard = time.monotonic()

    def on_message(self, message: bytes | str) -> None:
        self.heard()
        if not isinstance(message, bytes) or len(message) != _MESSAGE.size:
            return
        kind, stamp = _MESSAGE.unpack(message)
        if kind == _PING and self.channel is not None:
            with contextlib.suppress(Exception):
                self.channel.send(_MESSAGE.pack(_PONG, stamp))
        elif kind == _PONG:
            rtt = (time.monotonic_ns() - stamp) / 1e9
            if 0 <= rtt < 60:
                self.rtt = rtt if self.rtt is None else 0.8 * self.rtt + 0.2 * rtt

    async def run(self, closed: asyncio.Event) -> str | None:
        """Ping until ``closed`` is set (returns None) or the peer is silent too long (returns
        the reason)."""
        while not closed.is_set():
            if self.channel is not None and self.channel.readyState == "open":
                with contextlib.suppress(Exception):
                    self.channel.send(_MESSAGE.pack(_PING, time.monotonic_ns()))
            silent = time.monotonic() - self.last_heard
            if silent > self.peer_timeout:
                return (
                    f"peer vanished: nothing received for {silent:.1f} s "
                    f"(peer_timeout {self.peer_timeout:.1f} s)"
                )
            await asyncio.sleep(self.interval)
        return None
