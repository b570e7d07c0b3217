"""The receive path: transport -> unprotect (core session) -> position -> jitter buffer -> sink.

:meth:`ReceivePath.on_frame` runs on the event loop for every frame the transport delivers: a
frame the session refuses (tampered, replayed, wrong epoch...) is counted by reason and goes no
further.  An accepted frame goes into the jitter buffer at its authenticated position (its frame
number, :mod:`qphone.core.playoutposition`), never where its RTP sequence number and timestamp
alone would put it; a frame whose RTP fields disagree with that position is dropped and counted
(``misplaced``).  :meth:`ReceivePath.play` plays every slot when it is due.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from qphone.audio.streams import AudioSink
from qphone.core.errors import FrameRejected, QphoneError
from qphone.core.playoutposition import PlayoutPosition, PositionMismatch
from qphone.core.session import CallSession
from qphone.endpoint.observer import CallObserver, ReceivedPayload
from qphone.endpoint.playout import Playout
from qphone.endpoint.state import CallCounters
from qphone.transport.frames import ReceivedFrame


class ReceivePath:
    def __init__(
        self,
        session: CallSession,
        playout: Playout,
        counters: CallCounters,
        *,
        drain_events: Callable[[], None],
        observer: CallObserver | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self._session = session
        self._playout = playout
        self._counters = counters
        self._drain_events = drain_events
        self._observer = observer
        self._warn = warn
        self._position = PlayoutPosition(playout.jb.config.frame_ticks)

    def on_frame(self, frame: ReceivedFrame) -> None:
        session = self._session
        if session.closed:
            return
        t0 = time.perf_counter()
        try:
            opened = session.unprotect(frame.payload, frame.arrival)
        except FrameRejected as exc:
            self._counters.rejected[type(exc).__name__] += 1
            return
        except QphoneError:
            return
        payload = opened.payload
        try:
            place = self._position.place(opened.frame_number, frame.sequence, frame.rtp_timestamp)
        except PositionMismatch as exc:
            self._misplaced(exc)
            return
        spent = time.perf_counter() - t0
        self._counters.unprotect_seconds += spent
        self._counters.frames_received += 1
        if self._observer is not None:
            self._observer.on_received(
                ReceivedPayload(frame.rtp_timestamp, frame.sequence, frame.arrival, spent, payload)
            )
        self._playout.push(place.sequence, place.timestamp, payload, frame.arrival)
        self._drain_events()

    def _misplaced(self, exc: PositionMismatch) -> None:
        self._counters.misplaced += 1
        if self._counters.misplaced == 1 and self._warn is not None:
            self._warn(
                f"dropped a frame whose RTP sequence number or timestamp disagrees with its "
                f"authenticated position ({exc}): something on the media path reorders or splices "
                "frames, or the two ends use different --frame-ms; such frames are never played"
            )

    async def play(self, sink: AudioSink) -> None:
        """Play every due slot into ``sink`` until cancelled."""
        playout, observer = self._playout, self._observer
        frame_s = playout.config.frame_ms / 1000
        while True:
            for slot in playout.due(time.monotonic()):
                sink.write_frame(slot.pcm)
                if observer is not None:
                    observer.on_playout(slot)
            due = playout.next_due()
            wait = frame_s if due is None else min(frame_s, max(0.0, due - time.monotonic()))
            await asyncio.sleep(wait)
