"""The send path: capture -> Opus encode -> protect (core session) -> transport, paced per frame.

One :class:`SendPath` per call.  It never protects a frame with reused key: when the session
refuses (:class:`~qphone.core.errors.KeyExhausted`: the pad ran dry or a counter would repeat)
the frame is dropped and counted, and the call ends (fail closed) after ``STARVED_S`` without
fresh key.  In OTP mode it waits for the first pad before it starts, and :class:`PadWatch`
warns while the pad held covers less than ``PAD_WARN_S`` of talk (the caller keeps about half
a second ahead, :mod:`qphone.core.paddemand`: less means the KME or the peer is not keeping up).
When it starts sending it raises the media thread's priority where the system permits
(:mod:`qphone.endpoint.priority`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from qphone.audio.level import level_dbfs
from qphone.audio.opus import OpusConfig, OpusEncoder
from qphone.audio.streams import AudioSource
from qphone.core.callparams import Mode
from qphone.core.errors import KeyExhausted
from qphone.core.session import CallSession
from qphone.endpoint.observer import CallObserver, SentFrame
from qphone.endpoint.outcome import CallEnd, CallFailed, OutOfKey
from qphone.endpoint.priority import MEDIA_RT_PRIORITY, MediaPriority, hold_media_priority
from qphone.endpoint.state import CallCounters
from qphone.transport.calltransport import CallTransport

PAD_WARN_S = 0.15  # OTP: warn when the pad held covers less talk time than this
STARVED_S = 3.0  # the call ends after this long without key to protect a frame with
FIRST_PAD_TIMEOUT_S = 10.0  # OTP: the call ends if the first pad takes longer than this
FIRST_PAD_BYTES = 1024  # OTP: talking starts once this much pad (or one block) is held
INPUT_END_GRACE_S = 0.5  # the call hangs up this long after a WAV input ended (no --duration)
PAD_CHECK_FRAMES = 50  # OTP: the pad is checked every this many frames


def talk_seconds_left(session: CallSession, counters: CallCounters, frame_ms: int) -> float:
    """OTP: seconds of talk the pad held covers at the payload size sent so far (AES: inf)."""
    return session.pad_seconds_left(1000 / frame_ms, counters.payload_bytes_per_frame)


class PadWatch:
    """Warn (once per low spell) when the pad held covers less than PAD_WARN_S of talk."""

    def __init__(self, warn: Callable[[str], None], frame_ms: int) -> None:
        self._warn = warn
        self._frame_ms = frame_ms
        self._warned = False

    def check(self, session: CallSession, counters: CallCounters) -> None:
        left = talk_seconds_left(session, counters, self._frame_ms)
        if left < PAD_WARN_S and not self._warned:
            self._warned = True
            self._warn(
                f"one-time pad for only {left:.2f} s of talk left: the KME is not keeping up "
                "(check its key rate with `qkd-keyserver` status); frames are dropped when it "
                "runs out, and the call ends after 3 s without pad"
            )
        elif left > 2 * PAD_WARN_S:
            self._warned = False


class SendPath:
    def __init__(
        self,
        session: CallSession,
        transport: CallTransport,
        config: OpusConfig,
        counters: CallCounters,
        *,
        warn: Callable[[str], None],
        drain_events: Callable[[], None],
        end_call: Callable[[CallEnd | CallFailed], None],
        stopped: asyncio.Event,
        hang_up_when_input_ends: bool,
        observer: CallObserver | None = None,
    ) -> None:
        self._session = session
        self._transport = transport
        self._config = config
        self._encoder = OpusEncoder(config)
        self._counters = counters
        self._warn = warn
        self._drain_events = drain_events
        self._end_call = end_call
        self._stopped = stopped
        self._hang_up_when_input_ends = hang_up_when_input_ends
        self._observer = observer
        self._pad_watch = PadWatch(warn, config.frame_ms)
        self.input_ended = False
        self.priority: MediaPriority | None = None  # the media thread's, once sending

    async def run(self, source: AudioSource, paced: bool, realtime: bool = True) -> None:
        """Send until cancelled (or until the call fails for want of key). ``realtime``: ask
        for real-time scheduling (else a lower nice value only; see :mod:`.priority`)."""
        session, counters, observer = self._session, self._counters, self._observer
        step = self._config.samples_per_frame
        frame_s = self._config.frame_ms / 1000
        silence = bytes(self._config.frame_bytes)
        i = 0
        starved: float | None = None
        if not await self._wait_for_first_pad():
            return
        # the media path is on time even on a busy machine where the system lets it be
        rt = MEDIA_RT_PRIORITY if realtime else None
        self.priority = hold_media_priority(rt_priority=rt)  # until this task ends
        counters.media_priority = self.priority.describe()  # the summary says which
        start = time.monotonic()  # the pacing clock starts when talking can start (no burst)
        counters.talk_started = start
        protect = session.protect
        while True:
            pcm = await source.read_frame()
            if pcm is None:
                self._input_finished()
                pcm = silence
            now = time.monotonic()
            counters.input_level = level_dbfs(pcm)
            t0 = time.perf_counter()
            packet = self._encoder.encode(pcm)
            t1 = time.perf_counter()
            try:
                frame = protect(packet, now)
            except KeyExhausted as exc:
                # never reuse key: drop this frame; end the call if no fresh key comes soon
                counters.count_unsent(now, new_spell=starved is None)
                if starved is None:
                    starved = now
                    self._warn(f"{exc}; frames are dropped until fresh key arrives")
                elif now - starved > STARVED_S:
                    message = f"{exc} for {STARVED_S:g} s; the call ends (fail closed)"
                    self._end_call(OutOfKey(message))
                    return
                frame = b""
            else:
                starved = None
            t2 = time.perf_counter()
            counters.encode_seconds += t1 - t0
            counters.protect_seconds += t2 - t1
            ts = i * step
            if frame:
                self._transport.send_frame(frame, ts)
                if observer is not None:
                    acc = session.key_accounting()
                    observer.on_sent(
                        SentFrame(
                            i,
                            ts,
                            now,
                            time.monotonic(),
                            t1 - t0,
                            t2 - t1,
                            acc.consumed,
                            packet,
                            acc.fetched,
                        )
                    )
                counters.frames_sent += 1
                counters.payload_bytes_sent += len(packet)
            self._drain_events()
            i += 1
            if i % PAD_CHECK_FRAMES == 0 and session.mode is Mode.OTP:
                self._pad_watch.check(session, counters)
            if paced:
                delay = start + i * frame_s - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)

    def _input_finished(self) -> None:
        if self.input_ended:
            return
        self.input_ended = True
        if self._hang_up_when_input_ends:
            asyncio.get_running_loop().call_later(
                INPUT_END_GRACE_S, self._end_call, CallEnd.input_ended()
            )

    async def _wait_for_first_pad(self) -> bool:
        """OTP: do not start talking before the first pad is held by both ends (at most
        FIRST_PAD_BYTES, at least a block); False when it did not come (the call ends)."""
        session = self._session
        if session.mode is not Mode.OTP:
            return True
        first = min(FIRST_PAD_BYTES, session.params.pad_block_bits // 8)
        deadline = time.monotonic() + FIRST_PAD_TIMEOUT_S
        while session.pad_left_bytes < first and not self._stopped.is_set():
            if time.monotonic() > deadline:
                self._end_call(
                    OutOfKey(f"no one-time pad from the KME within {FIRST_PAD_TIMEOUT_S:g} s")
                )
                return False
            await asyncio.sleep(0.01)
        return True
