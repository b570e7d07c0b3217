"""Seeded network impairment model (sans-I/O): loss, delay, jitter, reorder, duplicate.

The model never reads a clock and never sleeps.  The caller offers each packet
with the current time and later asks which packets are due::

    imp = Impairment(ImpairmentParams(loss=0.1, delay_ms=20, jitter_ms=10, seed=7))
    imp.offer(packet, now)            # now: seconds on any monotonic clock
    for pkt in imp.pop_due(later):    # packets whose release time has come
        deliver(pkt)
    deadline = imp.next_deadline()    # when to call pop_due() again, or None

Semantics (all probabilities are per offered packet, drawn from one
``random.Random(seed)`` in a fixed order, so the same seed and the same offer
sequence always give the same drops, release times and order):

* loss: long-run loss rate ``loss``.  With ``burst_length == 1`` losses are
  independent (Bernoulli); with ``burst_length > 1`` a Gilbert-Elliott
  two-state chain (the bad state loses everything) gives mean loss bursts of
  ``burst_length`` packets with the same long-run rate.
* delay/jitter: release time = arrival + ``delay_ms`` + uniform[0, ``jitter_ms``].
  Jitter alone never reorders: release times of normal packets are made
  non-decreasing (like a FIFO link).
* reorder: with probability ``reorder`` a packet is held back an extra
  ``reorder_ms`` and is exempt from the FIFO rule, so later packets overtake it.
* duplicate: with probability ``duplicate`` a second copy is released
  ``duplicate_gap_ms`` after the original.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

_MAX_MS = 60_000.0


class ImpairmentError(ValueError):
    """Invalid impairment parameters."""


def _check_probability(name: str, value: float, *, upper_open: bool = False) -> None:
    if not math.isfinite(value) or value < 0.0 or value > 1.0 or (upper_open and value >= 1.0):
        bound = "[0, 1)" if upper_open else "[0, 1]"
        raise ImpairmentError(f"{name} must be a probability in {bound}, got {value!r}")


def _check_ms(name: str, value: float) -> None:
    if not math.isfinite(value) or value < 0.0 or value > _MAX_MS:
        raise ImpairmentError(f"{name} must be between 0 and {_MAX_MS:.0f} ms, got {value!r}")


@dataclass(frozen=True)
class ImpairmentParams:
    """Parameters of the impairment model; validated on construction."""

    loss: float = 0.0
    burst_length: float = 1.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    reorder: float = 0.0
    reorder_ms: float = 30.0
    duplicate: float = 0.0
    duplicate_gap_ms: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        _check_probability("loss", self.loss, upper_open=True)
        _check_probability("reorder", self.reorder)
        _check_probability("duplicate", self.duplicate)
        if not math.isfinite(self.burst_length) or not 1.0 <= self.burst_length <= 1000.0:
            raise ImpairmentError(
                f"burst_length must be between 1 and 1000 packets, got {self.burst_length!r}"
            )
        if self.burst_length > 1.0 and self.loss / (1.0 - self.loss) > self.burst_length:
            raise ImpairmentError(
                f"a loss rate of {self.loss} needs burst_length >= "
                f"{self.loss / (1.0 - self.loss):.3g} (or burst_length 1 for independent losses)"
            )
        for name in ("delay_ms", "jitter_ms", "reorder_ms", "duplicate_gap_ms"):
            _check_ms(name, float(getattr(self, name)))

    @property
    def is_identity(self) -> bool:
        """True when the model passes every packet through unchanged and undelayed."""
        return (
            self.loss == 0.0
            and self.delay_ms == 0.0
            and self.jitter_ms == 0.0
            and self.reorder == 0.0
            and self.duplicate == 0.0
        )


@dataclass(frozen=True)
class ImpairmentCounters:
    """What the model did so far."""

    offered: int
    dropped: int
    reordered: int
    duplicated: int
    released: int


@dataclass(order=True)
class _Pending(Generic[T]):
    release_at: float
    order: int
    item: T = field(compare=False)


class Impairment(Generic[T]):
    """Applies :class:`ImpairmentParams` to a stream of items (sans-I/O)."""

    def __init__(self, params: ImpairmentParams) -> None:
        self._params = params
        self._rng = random.Random(params.seed)
        self._in_bad_state = False
        # Gilbert-Elliott: P(bad -> good) = 1/burst, P(good -> bad) chosen so that
        # the stationary probability of the bad state equals the loss rate.
        self._p_recover = 1.0 / params.burst_length
        self._p_enter = (
            params.loss * self._p_recover / (1.0 - params.loss) if params.loss > 0 else 0.0
        )
        self._heap: list[_Pending[T]] = []
        self._order = 0
        self._last_fifo_release = -math.inf
        self._offered = 0
        self._dropped = 0
        self._reordered = 0
        self._duplicated = 0
        self._released = 0

    @property
    def params(self) -> ImpairmentParams:
        return self._params

    @property
    def counters(self) -> ImpairmentCounters:
        return ImpairmentCounters(
            offered=self._offered,
            dropped=self._dropped,
            reordered=self._reordered,
            duplicated=self._duplicated,
            released=self._released,
        )

    def _lost(self) -> bool:
        if self._params.loss == 0.0:
            return False
        u = self._rng.random()
        if self._params.burst_length == 1.0:
            return u < self._params.loss
        if self._in_bad_state:
            if u < self._p_recover:
                self._in_bad_state = False
        elif u < self._p_enter:
            self._in_bad_state = True
        return self._in_bad_state

    def _push(self, release_at: float, item: T) -> None:
        heapq.heappush(self._heap, _Pending(release_at, self._order, item))
        self._order += 1

    def offer(self, item: T, now: float) -> None:
        """Offer one item arriving at time ``now`` (seconds)."""
        if not math.isfinite(now):
            raise ImpairmentError(f"time must be finite, got {now!r}")
        p = self._params
        self._offered += 1
        # Draw every random number for this packet in a fixed order so that
        # results depend only on the seed and the offer sequence.
        lost = self._lost()
        jitter = self._rng.random() * p.jitter_ms if p.jitter_ms > 0 else 0.0
        reorder = p.reorder > 0 and self._rng.random() < p.reorder
        duplicate = p.duplicate > 0 and self._rng.random() < p.duplicate
        if lost:
            self._dropped += 1
            return
        release = now + (p.delay_ms + jitter) / 1000.0
        if reorder:
            release += p.reorder_ms / 1000.0
            self._reordered += 1
        else:
            release = max(release, self._last_fifo_release)
            self._last_fifo_release = release
        self._push(release, item)
        if duplicate:
            self._duplicated += 1
            self._push(release + p.duplicate_gap_ms / 1000.0, item)

    def next_deadline(self) -> float | None:
        """Time at which the next item becomes due, or None when nothing is pending."""
        return self._heap[0].release_at if self._heap else None

    def pop_due(self, now: float) -> list[T]:
        """Remove and return, in release order, every item due at or before ``now``."""
        out: list[T] = []
        while self._heap and self._heap[0].release_at <= now:
            out.append(heapq.heappop(self._heap).item)
        self._released += len(out)
        return out

    def pending(self) -> int:
        """Number of items held back (not yet released)."""
        return len(self._heap)
