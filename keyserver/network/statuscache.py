"""The launcher's latest summary of its network, and when to refresh it (sans-I/O: the caller
passes the time and does the collecting).

Asking every node costs the nodes (one state request each: their links and the link-state view
of every link) and the launcher (0.3 s of CPU at 167 sites), so nothing is asked while nobody
asks: a request answers from the cache when it is fresh enough (its age goes with it), and
otherwise waits for a collection; after a request the cache is refreshed in the background,
for :attr:`CachePolicy.linger_s` seconds, at a rate that keeps collecting to a modest share of
the time (:attr:`CachePolicy.duty`), so that a user (or ``watch``) asking again is answered
from memory. Idle, the cache only ages.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CachePolicy:
    fresh_s: float = 5.0  # a cached summary at most this old answers a request
    linger_s: float = 30.0  # background refreshes go on this long after the last request
    min_interval_s: float = 1.0  # between the starts of two background refreshes, at least
    duty: float = 0.25  # background refreshes collect at most this share of the time


class Action(enum.Enum):
    SERVE = "serve"  # answer from the cache now
    COLLECT = "collect"  # wait for a collection (none yet, or the cache is too old)


class SummaryCache:
    """The latest summary, when its collection started and how long it took."""

    def __init__(self, policy: CachePolicy | None = None) -> None:
        self.policy = policy or CachePolicy()
        self._summary: dict[str, Any] | None = None
        self._taken_at = -math.inf  # when the collection of the cached summary started
        self._tried_at = -math.inf  # when the latest collection started (it may have failed)
        self._duration = 0.0
        self._last_request = -math.inf
        self._urgent = False  # a request waits for a collection
        self.collections = 0
        self.attempts = 0  # collections, and collections that raised

    def interval(self) -> float:
        """Between the starts of two background refreshes."""
        return max(self.policy.min_interval_s, self._duration / self.policy.duty)

    def max_age(self) -> float:
        """The oldest summary that answers a request: `fresh_s`, or more when collecting takes
        so long that the background refreshes cannot keep it that fresh."""
        return max(self.policy.fresh_s, self.interval() + 2 * self._duration)

    def fresh(self, now: float) -> bool:
        return self._summary is not None and now - self._taken_at <= self.max_age()

    def on_request(self, now: float) -> Action:
        self._last_request = now
        if self.fresh(now):
            return Action.SERVE
        self._urgent = True
        return Action.COLLECT

    def next_refresh(self, now: float) -> float | None:
        """When to collect next: `now` if a request waits, the next background refresh while
        someone asked in the last `linger_s` seconds, None when idle (collect nothing)."""
        if self._urgent:
            return now
        if now - self._last_request > self.policy.linger_s:
            return None
        return self._tried_at + self.interval()

    def collected(self, summary: dict[str, Any], started: float, finished: float) -> None:
        self._summary = summary
        self._taken_at = self._tried_at = started
        self._duration = max(0.0, finished - started)
        self._urgent = False
        self.collections += 1
        self.attempts += 1

    def failed(self, started: float) -> None:
        """A collection raised: the waiting request is answered from what is cached."""
        self._tried_at = started
        self._urgent = False
        self.attempts += 1

    def answer(self, now: float) -> dict[str, Any] | None:
        """The cached summary with its age (``age_s``: since its collection started)."""
        if self._summary is None:
            return None
        return {**self._summary, "age_s": round(max(0.0, now - self._taken_at), 2)}
