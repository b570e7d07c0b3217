"""The launcher's status cache (pure): a request is answered from memory when the summary is
fresh enough, else waits for a collection; background refreshes only for a while after a
request, at a modest rate; nothing is collected while nobody asks."""

from __future__ import annotations

import pytest

from keyserver.network.statuscache import Action, CachePolicy, SummaryCache

POLICY = CachePolicy(fresh_s=5.0, linger_s=30.0, min_interval_s=1.0, duty=0.25)


def test_nothing_is_collected_before_anyone_asks() -> None:
    cache = SummaryCache(POLICY)
    assert cache.next_refresh(0.0) is None and cache.next_refresh(1e6) is None
    assert cache.answer(0.0) is None


def test_a_request_waits_for_the_first_collection_then_is_served_from_memory() -> None:
    cache = SummaryCache(POLICY)
    assert cache.on_request(100.0) is Action.COLLECT
    assert cache.next_refresh(100.0) == 100.0  # at once: a request waits
    cache.collected({"nodes": {}}, started=100.0, finished=100.8)
    assert cache.on_request(101.0) is Action.SERVE
    assert cache.answer(101.0) == {"nodes": {}, "age_s": 1.0}
    assert cache.on_request(104.9) is Action.SERVE  # within fresh_s of the collection's start
    assert cache.collections == 1


def test_refreshes_go_on_in_the_background_while_asked_and_stop_when_idle() -> None:
    cache = SummaryCache(POLICY)
    cache.on_request(0.0)
    cache.collected({"n": 1}, started=0.0, finished=0.85)
    # 0.85 s per collection: every 3.4 s (a quarter of the time), not every second
    assert cache.interval() == pytest.approx(3.4)
    assert cache.next_refresh(1.0) == pytest.approx(3.4)
    cache.collected({"n": 2}, started=3.4, finished=4.25)
    assert cache.next_refresh(5.0) == pytest.approx(3.4 + 3.4)
    assert cache.next_refresh(30.0) is not None  # 30 s after the last request
    assert cache.next_refresh(30.1) is None  # idle: no polling
    # a request after a long idle: the cache is too old, the request waits for a collection
    assert cache.on_request(500.0) is Action.COLLECT
    assert cache.next_refresh(500.0) == 500.0


def test_a_slow_collection_keeps_the_cache_usable_and_the_rate_modest() -> None:
    cache = SummaryCache(POLICY)
    cache.on_request(0.0)
    cache.collected({"n": 1}, started=0.0, finished=3.0)  # a loaded machine
    assert cache.interval() == 12.0
    assert cache.max_age() >= cache.interval() + 2 * 3.0  # background refreshes keep it fresh
    assert cache.on_request(17.9) is Action.SERVE
    assert cache.answer(17.9) == {"n": 1, "age_s": 17.9}


def test_a_failed_collection_is_retried_at_the_refresh_rate_not_at_once() -> None:
    cache = SummaryCache(POLICY)
    assert cache.on_request(0.0) is Action.COLLECT
    cache.failed(started=0.0)
    assert cache.attempts == 1 and cache.collections == 0
    assert cache.next_refresh(0.1) == 1.0  # not a tight loop of failures
    assert cache.answer(0.1) is None
