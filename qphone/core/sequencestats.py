"""Receive statistics over 16-bit RTP sequence numbers (sans-I/O).

Follows RFC 3550 appendix A.1: sequence numbers are extended to 64 bits across
wraparound; ``expected = highest - first + 1``; ``lost = expected - received``
(never negative); duplicates and late (out-of-order) packets are counted.
Duplicates are detected within a sliding window of recent sequence numbers.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

_SEQ_MOD = 1 << 16
_HALF = 1 << 15
DUPLICATE_WINDOW = 1024


@dataclass(frozen=True)
class SequenceSnapshot:
    """Counters at one moment."""

    received: int
    expected: int
    lost: int
    duplicates: int
    reordered: int
    highest: int | None

    @property
    def loss_fraction(self) -> float:
        return self.lost / self.expected if self.expected else 0.0


class SequenceStats:
    """Tracks loss, duplicates and reordering of a stream of 16-bit sequence numbers."""

    def __init__(self) -> None:
        self._first: int | None = None
        self._highest: int | None = None
        self._received = 0
        self._duplicates = 0
        self._reordered = 0
        self._recent: set[int] = set()
        self._recent_order: deque[int] = deque()

    def extend(self, seq: int) -> int:
        """Extended (unwrapped) sequence number of ``seq`` relative to the highest seen."""
        if not 0 <= seq < _SEQ_MOD:
            raise ValueError(f"sequence number out of range: {seq}")
        if self._highest is None:
            return seq
        base = self._highest - (self._highest % _SEQ_MOD)
        candidate = base + seq
        if candidate - self._highest > _HALF:
            candidate -= _SEQ_MOD
        elif self._highest - candidate > _HALF:
            candidate += _SEQ_MOD
        return candidate

    def add(self, seq: int) -> int:
        """Record one received packet; returns its extended sequence number."""
        ext = self.extend(seq)
        if ext in self._recent:
            self._duplicates += 1
            return ext
        self._recent.add(ext)
        self._recent_order.append(ext)
        if len(self._recent_order) > DUPLICATE_WINDOW:
            self._recent.discard(self._recent_order.popleft())
        self._received += 1
        if self._first is None or self._highest is None:
            self._first = ext
            self._highest = ext
        elif ext > self._highest:
            self._highest = ext
        else:
            self._reordered += 1
            self._first = min(self._first, ext)
        return ext

    def snapshot(self) -> SequenceSnapshot:
        if self._first is None or self._highest is None:
            return SequenceSnapshot(0, 0, 0, self._duplicates, self._reordered, None)
        expected = self._highest - self._first + 1
        return SequenceSnapshot(
            received=self._received,
            expected=expected,
            lost=max(0, expected - self._received),
            duplicates=self._duplicates,
            reordered=self._reordered,
            highest=self._highest,
        )
