"""The impairment filter on the event loop: the core model's decisions, released by timers."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

from qphone.core.impairment import Impairment, ImpairmentParams
from qphone.measure.impairmentfilter import ImpairmentFilter, impairment_filter
from qphone.transport.frames import RawFrame


def frames(n: int) -> list[RawFrame]:
    return [RawFrame(bytes([i % 256]) * 10, i, 960 * i) for i in range(n)]


async def _until(condition: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(10):
            while not condition():
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"not {what}") from None


async def test_the_same_frames_are_dropped_and_duplicated_as_by_the_model() -> None:
    params = ImpairmentParams(loss=0.2, duplicate=0.1, delay_ms=5, jitter_ms=5, seed=9)
    delivered: list[RawFrame] = []
    filt = ImpairmentFilter(params)
    filt.start(delivered.append)
    sent = frames(200)
    for f in sent:
        filt.offer(f)
    model: Impairment[RawFrame] = Impairment(params)
    for f in sent:
        model.offer(f, 0.0)
    expected = model.pop_due(float("inf"))
    await _until(lambda: len(delivered) == len(expected), "every frame released")
    assert Counter(delivered) == Counter(expected)
    assert filt.counters.offered == 200 and filt.counters.released == len(expected)


async def test_jitter_alone_keeps_the_order() -> None:
    delivered: list[RawFrame] = []
    filt = ImpairmentFilter(ImpairmentParams(delay_ms=2, jitter_ms=20, seed=4))
    filt.start(delivered.append)
    sent = frames(100)
    for f in sent:
        filt.offer(f)
    await _until(lambda: len(delivered) == len(sent), "every frame released")
    assert delivered == sent


async def test_nothing_is_delivered_after_close() -> None:
    delivered: list[RawFrame] = []
    filt = ImpairmentFilter(ImpairmentParams(delay_ms=50, seed=1))
    filt.start(delivered.append)
    for f in frames(5):
        filt.offer(f)
    assert delivered == []  # held back by the delay
    filt.close()
    filt.offer(frames(1)[0])
    await asyncio.sleep(0.1)
    assert delivered == [] and filt.counters.offered == 5


def test_no_filter_without_impairment() -> None:
    assert impairment_filter(None) is None
    assert impairment_filter(ImpairmentParams(seed=3)) is None  # the identity
    assert isinstance(impairment_filter(ImpairmentParams(loss=0.1)), ImpairmentFilter)
