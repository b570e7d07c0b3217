"""Sliding replay window over 64-bit counters (RFC 3711 section 3.3.2 style, any width).

``check`` only looks; ``accept`` records. Callers authenticate first, then accept, so a forged
frame never moves the window.
"""

from __future__ import annotations

from qphone.core.errors import FrameReplayed

DEFAULT_WINDOW = 2048


class ReplayWindow:
    def __init__(self, size: int = DEFAULT_WINDOW) -> None:
        if size < 64:
            raise ValueError("replay window must cover at least 64 frames")
        self.size = size
        self._highest = -1
        self._mask = (1 << size) - 1
        self._seen = 0  # bit i set: counter (highest - i) was accepted

    @property
    def highest(self) -> int:
        return self._highest

    def check(self, ctr: int) -> None:
        if ctr > self._highest:
            return
        age = self._highest - ctr
        if age >= self.size:
            raise FrameReplayed(
                f"counter {ctr} is older than the replay window ({self.size} frames)"
            )
        if (self._seen >> age) & 1:
            raise FrameReplayed(f"counter {ctr} was already received")

    def accept(self, ctr: int) -> None:
        """Record ``ctr``; raises FrameReplayed (and records nothing) if it is a replay."""
        highest = self._highest
        if ctr > highest:
            shift = ctr - highest
            self._seen = ((self._seen << shift) | 1) & self._mask if shift < self.size else 1
            self._highest = ctr
            return
        self.check(ctr)
        self._seen |= 1 << (highest - ctr)
