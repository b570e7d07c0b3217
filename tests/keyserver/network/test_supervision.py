"""The restart policy of a network's processes: doubling delays, a cap, giving up."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from keyserver.network.supervision import RestartPolicy


def test_delays_double_up_to_the_cap_and_it_gives_up_after_the_last_restart() -> None:
    p = RestartPolicy(max_restarts=7, first_delay_s=1.0, max_delay_s=30.0, window_s=600.0)
    delays = [p.delay("node-a", float(t)) for t in range(8)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, None]
    assert p.restarts("node-a") == 7
    assert p.delay("node-b", 8.0) == 1.0  # each process has its own count


def test_restarts_older_than_the_window_are_forgotten() -> None:
    p = RestartPolicy(max_restarts=2, window_s=100.0)
    assert p.delay("m", 0.0) == 1.0
    assert p.delay("m", 10.0) == 2.0
    assert p.delay("m", 20.0) is None
    assert p.delay("m", 200.0) == 1.0  # both restarts left the window


@given(st.lists(st.floats(min_value=0, max_value=10_000), max_size=40))
def test_never_more_restarts_in_a_window_than_allowed(times: list[float]) -> None:
    p = RestartPolicy()
    granted = [t for t in sorted(times) if p.delay("x", t) is not None]
    for t in granted:
        inside = [u for u in granted if t - p.window_s <= u <= t]
        assert len(inside) <= p.max_restarts
