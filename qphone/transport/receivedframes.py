"""The receive side of the media path: frames off the network on their way to the layer above.

Every :class:`~qphone.transport.frames.RawFrame` a media path ingests counts as a sign of life
(the ``heard`` function, :meth:`qphone.transport.heartbeat.Heartbeat.heard`), goes through the
caller's :class:`~qphone.transport.frames.ReceiveFilter` if there is one, and is then delivered:
counted (sequence statistics, bytes), stamped with its arrival time and handed to the frame
callback, or else queued (at most ``limit`` frames, the oldest dropped and counted) for
:meth:`ReceivedFrames.frames`. After :meth:`ReceivedFrames.close` nothing more is delivered.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable

from qphone.core.sequencestats import SequenceSnapshot, SequenceStats
from qphone.transport.frames import RawFrame, ReceivedFrame, ReceiveFilter


class ReceivedFrames:
    """Filter, count and deliver the frames one transport receives."""

    def __init__(
        self, limit: int, receive_filter: ReceiveFilter | None, heard: Callable[[], None]
    ) -> None:
        self._limit = limit
        self._filter = receive_filter
        self._heard = heard
        self._frames: deque[ReceivedFrame] = deque()
        self._event = asyncio.Event()
        self._callback: Callable[[ReceivedFrame], None] | None = None
        self._closed = False
        self._seq = SequenceStats()
        self.bytes_received = 0
        self.overflowed = 0
        """Received frames dropped because nobody consumed frames() fast enough."""
        if receive_filter is not None:
            receive_filter.start(self._deliver)

    def set_callback(self, callback: Callable[[ReceivedFrame], None] | None) -> None:
        """Deliver frames to ``callback`` (called on the event loop) instead of frames()."""
        self._callback = callback

    def ingest(self, raw: RawFrame) -> None:
        """A media path received ``raw`` from the network."""
        self._heard()
        if self._closed:
            return
        if self._filter is None:
            self._deliver(raw)
        else:
            self._filter.offer(raw)

    def _deliver(self, raw: RawFrame) -> None:
        self._seq.add(raw.sequence)
        self.bytes_received += len(raw.payload)
        frame = ReceivedFrame(raw.payload, raw.sequence, raw.timestamp, time.monotonic())
        if self._callback is not None:
            self._callback(frame)
            return
        if len(self._frames) >= self._limit:
            self._frames.popleft()
            self.overflowed += 1
        self._frames.append(frame)
        self._event.set()

    async def frames(self) -> AsyncIterator[ReceivedFrame]:
        """Received frames in arrival order; ends when closed."""
        while True:
            while self._frames:
                yield self._frames.popleft()
            if self._closed:
                return
            self._event.clear()
            await self._event.wait()

    def sequence(self) -> SequenceSnapshot:
        """Received, lost, duplicated and reordered frames so far."""
        return self._seq.snapshot()

    def close(self) -> None:
        """Stop: frames() ends once drained, the filter delivers nothing more."""
        self._closed = True
        self._event.set()
        if self._filter is not None:
            self._filter.close()
