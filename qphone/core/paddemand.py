"""How much one-time pad to hold ahead of need in one direction: a lookahead in talk time.

The initiator (who fetches every pad block, as the ETSI 014 master SAE) keeps each direction's
pad stream a little ahead of where its sender is: enough for ``seconds`` of talk at the rate the
stream is actually used at, never less than one block.  Pad left over when the call ends is
erased unused, so this lookahead (plus up to one block) is what an OTP call wastes; the rate is
measured, not assumed from the codec's nominal bitrate, so a quieter stream (VBR, a pause, a
peer at another bitrate) holds less, a faster one more.  Until a rate is known the initial
lookahead (``initial_bytes``) is held.  Key that takes long to arrive (a key relayed across
many trusted nodes) widens the lookahead: the caller reports each refill's latency and the
horizon becomes ``seconds + 2 x latency``, the latency part held at the highest rate of the
last few seconds (a starved stream's measured rate falls, its need does not).  A latency
reported before any rate is known (the handshake key's, before the first frame) widens the
initial lookahead in proportion (``initial_bytes`` stands for ``seconds`` of talk), so the first
request already covers a slow route instead of starving the call's first seconds.  Sans-I/O:
positions, times and latencies are passed in.
"""

from __future__ import annotations

import math
from collections import deque

SAMPLE_S = 0.1  # at most one position sample per this many seconds (1 frame in 5)
WINDOW_S = 1.0  # the rate is measured over the last second of positions
MIN_SPAN_S = 0.25  # ... once that many seconds have been seen
LATENCY_FACTOR = 2.0  # seconds of talk held per second a refill takes
LATENCY_HALF_LIFE_S = 20.0  # the latency peak halves in this many seconds of the stream's time
MAX_LATENCY_S = 30.0  # a slower refill than this is counted as this
PEAK_WINDOW_S = 5.0  # the latency is covered at the highest rate of this many seconds


class PadDemand:
    """Pad bytes to hold ahead of one stream's position (see the module docstring)."""

    def __init__(self, block_bytes: int, initial_bytes: int, seconds: float | None) -> None:
        if block_bytes <= 0 or initial_bytes < 0:
            raise ValueError("block_bytes must be positive and initial_bytes not negative")
        if seconds is not None and not seconds > 0:
            raise ValueError("the lookahead must be a positive number of seconds")
        self._block = block_bytes
        self._initial = initial_bytes
        self._seconds = seconds
        self._latency = 0.0  # how long a refill takes to arrive: the recent peak, decaying
        self._decayed_at: float | None = None  # the stream time the peak last decayed at
        self._peaks: deque[tuple[float, float]] = deque()  # (time, rate): recent maxima
        self._samples: deque[tuple[float, int]] = deque()
        self.bytes_ahead = initial_bytes  # what to hold now
        # observe() before this time records nothing: callers on the per-frame path may skip it
        self.next_sample = -math.inf if seconds is not None else math.inf

    @property
    def horizon_s(self) -> float | None:
        """Seconds of talk held ahead: the lookahead, plus twice the time a refill takes (a
        refill asked for now arrives that much later, possibly behind the other direction's);
        the latency part at the highest rate of the last :data:`PEAK_WINDOW_S` seconds."""
        return None if self._seconds is None else self._seconds + LATENCY_FACTOR * self._latency

    def key_latency(self, seconds: float) -> None:
        """A refill took ``seconds`` from request to delivery (a relayed key across many trusted
        nodes takes far longer than one from the next room).  The horizon follows the slowest
        recent one: a peak that halves every :data:`LATENCY_HALF_LIFE_S` seconds of the stream's
        time (:meth:`observe`), not per report: a loaded route's relay time spikes now and then,
        and fast refills in between (several a second) must not make it forget the last spike
        before the next one."""
        if not seconds >= 0:
            raise ValueError("a key latency is a number of seconds, not negative")
        self._latency = max(min(seconds, MAX_LATENCY_S), self._latency)
        self._update()

    @property
    def rate(self) -> float | None:
        """Bytes per second the stream was used at over the last second (None: not known)."""
        if len(self._samples) < 2:
            return None
        (t0, p0), (t1, p1) = self._samples[0], self._samples[-1]
        if t1 - t0 < MIN_SPAN_S:
            return None
        return max(0.0, (p1 - p0) / (t1 - t0))

    def observe(self, position: int, now: float) -> None:
        """The stream's sender has used it up to ``position`` at time ``now``."""
        if now < self.next_sample:  # also when there is no lookahead in seconds (inf)
            return
        if self._decayed_at is not None and self._latency:
            self._latency *= 0.5 ** ((now - self._decayed_at) / LATENCY_HALF_LIFE_S)
        self._decayed_at = now
        samples = self._samples
        samples.append((now, position))
        self.next_sample = now + SAMPLE_S
        while now - samples[0][0] > WINDOW_S:
            samples.popleft()
        rate = self.rate
        if rate is not None:
            peaks = self._peaks
            while peaks and peaks[-1][1] <= rate:  # a decreasing run of maxima
                peaks.pop()
            peaks.append((now, rate))
            while now - peaks[0][0] > PEAK_WINDOW_S:
                peaks.popleft()
            self._update(rate)

    @property
    def peak(self) -> float:
        """The highest rate of the last :data:`PEAK_WINDOW_S` seconds (0: none yet)."""
        return self._peaks[0][1] if self._peaks else 0.0

    def _update(self, rate: float | None = None) -> None:
        if rate is None:
            rate = self.rate
        if self._seconds is None:
            return
        if rate is None:  # no rate yet: the initial lookahead (``seconds`` of talk) scaled up
            widen = 1.0 + LATENCY_FACTOR * self._latency / self._seconds
            self.bytes_ahead = max(self._initial, math.ceil(self._initial * widen))
            return
        # the latency is covered at the highest recent rate: a stream starved of pad (frames
        # dropped while a slow refill is on its way) shows a falling rate, not its need
        cover = LATENCY_FACTOR * self._latency * max(rate, self.peak)
        self.bytes_ahead = max(self._block, math.ceil(rate * self._seconds + cover))
