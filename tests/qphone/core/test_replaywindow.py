import pytest
from hypothesis import given
from hypothesis import strategies as st

from qphone.core.errors import FrameReplayed
from qphone.core.replaywindow import ReplayWindow


@given(st.lists(st.integers(min_value=0, max_value=5000), max_size=300))
def test_matches_reference_model(counters: list[int]) -> None:
    w = ReplayWindow(1024)
    seen: set[int] = set()
    highest = -1
    for c in counters:
        ok = c not in seen and c > highest - 1024
        try:
            w.accept(c)
        except FrameReplayed:
            assert not ok
            continue
        assert ok
        seen.add(c)
        highest = max(highest, c)


def test_check_does_not_change_state() -> None:
    w = ReplayWindow(64)
    w.check(10)
    w.check(10)
    w.accept(10)
    with pytest.raises(FrameReplayed, match="already"):
        w.check(10)
    w.accept(100)
    with pytest.raises(FrameReplayed, match="older"):
        w.accept(36)
    w.accept(37)


def test_minimum_size() -> None:
    with pytest.raises(ValueError):
        ReplayWindow(32)
