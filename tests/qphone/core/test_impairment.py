"""Tests of the sans-I/O impairment model: determinism, rates, ordering rules."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qphone.core.impairment import Impairment, ImpairmentError, ImpairmentParams

FRAME_S = 0.02


def run(params: ImpairmentParams, n: int) -> list[tuple[float, int]]:
    """Offer n packets every 20 ms, drain everything; return (release time, packet id)."""
    imp: Impairment[int] = Impairment(params)
    out: list[tuple[float, int]] = []
    for i in range(n):
        now = i * FRAME_S
        imp.offer(i, now)
        out.extend((now, x) for x in imp.pop_due(now))
    while (deadline := imp.next_deadline()) is not None:
        out.extend((deadline, x) for x in imp.pop_due(deadline))
    return out


params_strategy = st.builds(
    ImpairmentParams,
    loss=st.floats(0.0, 0.5),
    burst_length=st.sampled_from([1.0, 2.0, 4.0]),
    delay_ms=st.floats(0.0, 200.0),
    jitter_ms=st.floats(0.0, 100.0),
    reorder=st.floats(0.0, 0.3),
    duplicate=st.floats(0.0, 0.3),
    seed=st.integers(0, 2**32),
)


@settings(max_examples=40, deadline=None)
@given(params=params_strategy)
def test_same_seed_same_outcome(params: ImpairmentParams) -> None:
    assert run(params, 300) == run(params, 300)


@settings(max_examples=30, deadline=None)
@given(params=params_strategy)
def test_different_seed_changes_lossy_outcome(params: ImpairmentParams) -> None:
    if params.loss < 0.1:
        return
    other = ImpairmentParams(**{**params.__dict__, "seed": params.seed + 1})
    assert run(params, 400) != run(other, 400)


@settings(max_examples=25, deadline=None)
@given(
    loss=st.floats(0.01, 0.5),
    burst=st.sampled_from([1.0, 1.5, 3.0]),
    seed=st.integers(0, 2**32),
)
def test_loss_rate_matches(loss: float, burst: float, seed: int) -> None:
    n = 20_000
    params = ImpairmentParams(loss=loss, burst_length=burst, seed=seed)
    imp: Impairment[int] = Impairment(params)
    for i in range(n):
        imp.offer(i, 0.0)
    rate = imp.counters.dropped / n
    # Bursty losses are correlated: the variance of the rate grows with the mean
    # burst length, so widen the tolerance accordingly (6 sigma, never flaky).
    sigma = math.sqrt(loss * (1 - loss) / n) * math.sqrt(2 * max(burst, 1 / (1 - loss)))
    assert abs(rate - loss) < 6 * sigma + 0.002


def test_mean_burst_length_matches() -> None:
    params = ImpairmentParams(loss=0.1, burst_length=4.0, seed=3)
    imp: Impairment[int] = Impairment(params)
    lost_flags = []
    for i in range(50_000):
        before = imp.counters.dropped
        imp.offer(i, 0.0)
        lost_flags.append(imp.counters.dropped > before)
    bursts, run_len = [], 0
    for lost in lost_flags:
        if lost:
            run_len += 1
        elif run_len:
            bursts.append(run_len)
            run_len = 0
    assert 3.5 < sum(bursts) / len(bursts) < 4.5


@settings(max_examples=25, deadline=None)
@given(dup=st.floats(0.01, 0.5), seed=st.integers(0, 2**32))
def test_duplicate_rate_matches(dup: float, seed: int) -> None:
    n = 10_000
    out = run(ImpairmentParams(duplicate=dup, seed=seed), n)
    extra = (len(out) - n) / n
    assert abs(extra - dup) < 6 * math.sqrt(dup * (1 - dup) / n) + 0.002


@settings(max_examples=30, deadline=None)
@given(
    delay=st.floats(0.0, 300.0),
    jitter=st.floats(0.0, 100.0),
    seed=st.integers(0, 2**32),
)
def test_delay_bounds_and_fifo_without_reorder(delay: float, jitter: float, seed: int) -> None:
    params = ImpairmentParams(delay_ms=delay, jitter_ms=jitter, seed=seed)
    imp: Impairment[int] = Impairment(params)
    release: dict[int, float] = {}
    order: list[int] = []
    for i in range(200):
        imp.offer(i, i * FRAME_S)
    while (deadline := imp.next_deadline()) is not None:
        for x in imp.pop_due(deadline):
            release[x] = deadline
            order.append(x)
    assert order == list(range(200))  # jitter alone never reorders
    for i, t in release.items():
        assert t >= i * FRAME_S + delay / 1000 - 1e-9
    # FIFO clamping may add waiting time, but never beyond the worst jitter.
    assert max(t - i * FRAME_S for i, t in release.items()) <= (delay + jitter) / 1000 + 1e-9


def test_reorder_lets_later_packets_overtake() -> None:
    out = run(ImpairmentParams(reorder=0.2, reorder_ms=50, seed=11), 2000)
    ids = [x for _, x in out]
    assert sorted(ids) == list(range(2000))
    inversions = sum(1 for a, b in itertools.pairwise(ids) if a > b)
    assert 200 < inversions < 600


def test_identity_passes_everything_immediately() -> None:
    params = ImpairmentParams()
    assert params.is_identity
    imp: Impairment[str] = Impairment(params)
    imp.offer("a", 1.0)
    assert imp.pop_due(1.0) == ["a"]
    assert imp.next_deadline() is None


def test_pending_items_not_released_early() -> None:
    imp: Impairment[str] = Impairment(ImpairmentParams(delay_ms=100))
    imp.offer("a", 0.0)
    assert imp.pop_due(0.099) == []
    assert imp.pending() == 1
    assert imp.next_deadline() == pytest.approx(0.1)
    assert imp.pop_due(0.1) == ["a"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"loss": 1.0},
        {"loss": -0.1},
        {"loss": float("nan")},
        {"duplicate": 1.5},
        {"delay_ms": -1.0},
        {"jitter_ms": float("inf")},
        {"burst_length": 0.5},
        {"loss": 0.8, "burst_length": 2.0},
    ],
)
def test_bad_parameters_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ImpairmentError):
        ImpairmentParams(**kwargs)  # type: ignore[arg-type]


def test_nonfinite_time_rejected() -> None:
    imp: Impairment[int] = Impairment(ImpairmentParams(loss=0.1))
    with pytest.raises(ImpairmentError):
        imp.offer(1, float("nan"))
    assert imp.counters.offered == 0
