"""An aiortc audio track that hands pre-built opaque payloads to RTCRtpSender.

aiortc 1.16's ``RTCRtpSender`` packs an ``av.Packet`` returned by a track's
``recv()`` without re-encoding: ``OpusEncoder.pack()`` returns
``[bytes(packet)]`` and converts ``pts`` from ``time_base`` to the 48 kHz RTP
clock (identity here).  So each :meth:`PayloadTrack.push` becomes exactly one
RTP packet whose payload is our bytes, unchanged.  ``recv()`` never sleeps: the
pace is whatever the caller's clock pushes.
"""

from __future__ import annotations

import asyncio
import fractions
from collections import deque
from typing import Any

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

RTP_CLOCK_RATE = 48_000
TIME_BASE = fractions.Fraction(1, RTP_CLOCK_RATE)
DEFAULT_QUEUE_FRAMES = 64


class PayloadTrack(MediaStreamTrack):
    """Audio track whose frames are opaque payloads pushed by the application."""

    kind = "audio"

    def __init__(self, max_queue: int = DEFAULT_QUEUE_FRAMES) -> None:
        super().__init__()
        self._queue: deque[tuple[bytes, int]] = deque()
        self._max_queue = max_queue
        self._wakeup: asyncio.Event = asyncio.Event()
        self.dropped = 0

    def push(self, payload: bytes, timestamp: int) -> None:
        """Queue one payload with its 48 kHz timestamp; drops the oldest when full."""
        if self.readyState != "live":
            raise MediaStreamError("track has ended")
        if len(self._queue) >= self._max_queue:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append((payload, timestamp))
        self._wakeup.set()

    async def recv(self) -> av.Packet[Any]:
        while not self._queue:
            if self.readyState != "live":
                raise MediaStreamError("track has ended")
            self._wakeup.clear()
            await self._wakeup.wait()
        payload, timestamp = self._queue.popleft()
        packet = av.Packet(payload)
        packet.pts = timestamp
        packet.time_base = TIME_BASE
        return packet

    def stop(self) -> None:
        super().stop()
        self._wakeup.set()
