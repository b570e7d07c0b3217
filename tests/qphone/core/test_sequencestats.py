"""Tests of RTP sequence-number receive statistics (sans-I/O)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from qphone.core.sequencestats import SequenceStats


@given(start=st.integers(0, 65535), n=st.integers(1, 3000), drops=st.sets(st.integers(1, 2998)))
def test_counts_losses_across_wraparound(start: int, n: int, drops: set[int]) -> None:
    stats = SequenceStats()
    kept = [i for i in range(n) if i not in drops or i == n - 1]
    for i in kept:
        stats.add((start + i) % 65536)
    snap = stats.snapshot()
    assert snap.expected == n
    assert snap.received == len(kept)
    assert snap.lost == n - len(kept)
    assert snap.duplicates == 0
    assert snap.reordered == 0


@given(start=st.integers(0, 65535))
def test_duplicates_and_reordering(start: int) -> None:
    stats = SequenceStats()
    for i in (0, 2, 1, 2, 3, 3):
        stats.add((start + i) % 65536)
    snap = stats.snapshot()
    assert snap.received == 4
    assert snap.duplicates == 2
    assert snap.reordered == 1
    assert snap.lost == 0
    assert snap.loss_fraction == 0.0


def test_empty_and_out_of_range() -> None:
    stats = SequenceStats()
    assert stats.snapshot().expected == 0
    try:
        stats.add(70000)
    except ValueError:
        pass
    else:
        raise AssertionError("accepted a 17-bit sequence number")
    assert stats.snapshot().received == 0
