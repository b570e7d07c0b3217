"""Seeded network impairment on a transport's receive path, for tests and measurements.

:class:`ImpairmentFilter` is a :class:`~qphone.transport.frames.ReceiveFilter`: it runs the
sans-I/O model of :mod:`qphone.core.impairment` (loss, delay, jitter, reorder, duplicate) on the
event loop's clock and releases frames with loop timers.  ``qphone loopback`` puts one on each
endpoint's receive path; ``qphone call|answer --loss ... --seed S`` puts one on its own; the
production path has none.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from qphone.core.impairment import Impairment, ImpairmentCounters, ImpairmentParams
from qphone.transport.frames import RawFrame


class ImpairmentFilter:
    def __init__(self, params: ImpairmentParams) -> None:
        self._model: Impairment[RawFrame] = Impairment(params)
        self._deliver: Callable[[RawFrame], None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def counters(self) -> ImpairmentCounters:
        return self._model.counters

    def start(self, deliver: Callable[[RawFrame], None]) -> None:
        self._deliver = deliver

    def offer(self, frame: RawFrame) -> None:
        if self._closed:
            return
        self._model.offer(frame, asyncio.get_running_loop().time())
        self._release()

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _release(self) -> None:
        loop = asyncio.get_running_loop()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._closed:
            return
        assert self._deliver is not None, "start() first"
        for frame in self._model.pop_due(loop.time()):
            self._deliver(frame)
        deadline = self._model.next_deadline()
        if deadline is not None and not self._closed:
            self._timer = loop.call_at(deadline, self._release)


def impairment_filter(params: ImpairmentParams | None) -> ImpairmentFilter | None:
    """A filter for ``params``, or None when there is nothing to impair."""
    if params is None or params.is_identity:
        return None
    return ImpairmentFilter(params)
