"""A watched Get status: the query's strict parser, and a wait that ends when the version moves."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyserver.etsi014.statuswatch import (
    MAX_VERSION,
    MAX_WAIT_S,
    StatusWatch,
    WatchQueryError,
    parse_watch_query,
)


@given(st.integers(0, MAX_VERSION - 1), st.integers(1, int(MAX_WAIT_S * 1000)))
def test_a_valid_query_round_trips(after: int, wait_ms: int) -> None:
    wait = f"{wait_ms / 1000:.3f}"
    assert parse_watch_query({"after": [str(after)], "wait": [wait]}) == (after, float(wait))


@given(st.dictionaries(st.text(max_size=8), st.lists(st.text(max_size=24), max_size=3)))
def test_any_query_is_parsed_or_refused_with_the_one_error(query: dict[str, list[str]]) -> None:
    try:
        after, wait = parse_watch_query(query)
    except WatchQueryError:
        return
    assert set(query) == {"after", "wait"}
    assert 0 <= after < MAX_VERSION and 0 < wait <= MAX_WAIT_S


@pytest.mark.parametrize(
    "query",
    [
        {"after": ["1"]},
        {"after": ["1"], "wait": ["5"], "x": ["1"]},
        {"after": ["1", "2"], "wait": ["5"]},
        {"after": ["-1"], "wait": ["5"]},
        {"after": [str(MAX_VERSION)], "wait": ["5"]},
        {"after": ["1"], "wait": ["0"]},
        {"after": ["1"], "wait": ["61"]},
        {"after": ["1"], "wait": ["nan"]},
        {"after": ["1e3"], "wait": ["5"]},
    ],
)
def test_bad_queries_are_refused(query: dict[str, list[str]]) -> None:
    with pytest.raises(WatchQueryError):
        parse_watch_query(query)


async def test_a_waiter_is_held_until_the_version_moves() -> None:
    watch = StatusWatch()
    v = watch.version
    held = asyncio.ensure_future(watch.wait_past(v, MAX_WAIT_S))
    for _ in range(20):  # the loop runs, nothing changes: the waiter stays
        await asyncio.sleep(0)
    assert not held.done()
    watch.bump()
    await asyncio.wait_for(held, MAX_WAIT_S)
    assert watch.version == v + 1
    # a waiter on an old version is answered at once
    await asyncio.wait_for(watch.wait_past(v, MAX_WAIT_S), MAX_WAIT_S)
