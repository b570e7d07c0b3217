"""qphone.measure.latency: known delays on synthetic speech-like signals are found to the sample."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.signal import butter, sosfilt

from qphone.measure.latency import (
    LatencyParams,
    TimelineError,
    Timelines,
    measure_latency,
    percentiles,
    timelines_from_call_logs,
)

RATE = 48000
F = 960  # 20 ms
FRAME_S = F / RATE
T0 = 1000.0  # monotonic-like start time


def speechlike(seconds: float, seed: int) -> np.ndarray:
    """Band-limited noise (100-4000 Hz) in 'syllables' of 80-300 ms with 20-150 ms pauses."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    noise = sosfilt(butter(4, [100, 4000], "bandpass", fs=RATE, output="sos"), rng.normal(0, 1, n))
    env = np.zeros(n)
    i = int(0.1 * RATE)
    while i < n:
        length = int(rng.uniform(0.08, 0.3) * RATE)
        shape = 0.3 + 0.7 * np.hanning(len(env[i : i + length]))
        env[i : i + length] = rng.uniform(0.3, 1.0) * shape
        i += length + int(rng.uniform(0.02, 0.15) * RATE)
    x = noise * env
    return np.asarray(np.clip(x / np.abs(x).max() * 20000, -32768, 32767), dtype=np.int16)


def frames_of(x: np.ndarray) -> list[np.ndarray]:
    n = math.ceil(len(x) / F)
    padded = np.zeros(n * F, dtype=np.int16)
    padded[: len(x)] = x
    return [padded[k * F : (k + 1) * F] for k in range(n)]


def delayed_stream(x: np.ndarray, lag: int) -> np.ndarray:
    """The input as a codec with ``lag`` samples of look-ahead would output it."""
    return np.concatenate([np.zeros(lag, dtype=np.int16), x])[: len(x)]


def simulate(
    x: np.ndarray,
    delay_ms: float,
    lag: int = 0,
    drop: frozenset[int] = frozenset(),
    jitter_ms: float = 0.0,
    seed: int = 0,
) -> Timelines:
    """Capture frame i at T0 + 20i ms; play output frame k at T0 + 20k ms + delay (+ jitter)."""
    rng = np.random.default_rng(seed)
    out_frames = frames_of(delayed_stream(x, lag))
    output = []
    for k, pcm in enumerate(out_frames):
        if k in drop:
            continue  # lost: nothing played for it, the others keep their times
        t = T0 + k * FRAME_S + delay_ms / 1000 + rng.uniform(-jitter_ms, jitter_ms) / 1000
        output.append((t, pcm))
    times = T0 + np.arange(math.ceil(len(x) / F)) * FRAME_S
    return Timelines.build(RATE, x, F, times, output)


SIGNAL = speechlike(4.0, seed=1)


def test_constant_delay_is_found_to_the_sample() -> None:
    res = measure_latency(simulate(SIGNAL, 120.0, lag=312))
    true = 120.0 + 312 / RATE * 1000
    assert res.windows >= 20
    assert np.all(np.abs(res.latencies_ms - true) < 0.1)
    assert res.p50 == pytest.approx(true, abs=0.1)
    assert res.p50 <= res.p95 <= res.p99 <= res.max
    assert np.all(res.correlations > 0.99)
    assert np.all(np.diff(res.times) > 0)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    delay_ms=st.floats(1, 600),
    lag=st.integers(0, F - 1),
    drop=st.frozensets(st.integers(0, 199), max_size=20),
    seed=st.integers(0, 2**16),
)
def test_known_delay_with_lost_frames(
    delay_ms: float, lag: int, drop: frozenset[int], seed: int
) -> None:
    """Lost output frames leave gaps in the played stream but change no frame's latency."""
    x = speechlike(4.0, seed)
    res = measure_latency(simulate(x, delay_ms, lag=lag, drop=drop))
    true = delay_ms + lag / RATE * 1000
    assert res.windows >= 10
    assert np.max(np.abs(res.latencies_ms - true)) < 0.1


@settings(max_examples=10, deadline=None)
@given(jitter_ms=st.floats(0.5, 8.0), seed=st.integers(0, 1000))
def test_playout_jitter_stays_within_its_bound(jitter_ms: float, seed: int) -> None:
    res = measure_latency(simulate(SIGNAL, 80.0, jitter_ms=jitter_ms, seed=seed))
    assert res.windows >= 20
    assert np.all(np.abs(res.latencies_ms - 80.0) <= jitter_ms + 0.1)


def _step(x: np.ndarray, inserted: int, skipped: int, at: int, delay_ms: float) -> Timelines:
    """A jitter buffer that, at output frame ``at``, plays ``inserted`` frames of concealment
    (latency grows by 20 ms each) and then skips ``skipped`` input frames (shrinks by 20 ms each).
    Playout stays on its 20 ms clock throughout."""
    src = frames_of(x)
    carried: list[np.ndarray] = src[:at] + [np.zeros(F, dtype=np.int16)] * inserted
    carried += src[at + skipped :]
    output = [(T0 + k * FRAME_S + delay_ms / 1000, pcm) for k, pcm in enumerate(carried)]
    times = T0 + np.arange(len(src)) * FRAME_S
    return Timelines.build(RATE, x, F, times, output)


@pytest.mark.parametrize(("inserted", "skipped"), [(3, 0), (0, 2), (5, 0)])
def test_delay_step_is_followed(inserted: int, skipped: int) -> None:
    x = speechlike(6.0, seed=3)
    at = 150  # 3.0 s
    before, after = 60.0, 60.0 + 20.0 * (inserted - skipped)
    res = measure_latency(_step(x, inserted, skipped, at, before))
    assert res.windows >= 30
    t_step = T0 + at * FRAME_S + before / 1000
    early = res.latencies_ms[res.times < t_step - 0.3]
    late = res.latencies_ms[res.times > t_step + 0.3]
    assert len(early) >= 10 and len(late) >= 10
    assert np.all(np.abs(early - before) < 0.1)
    assert np.all(np.abs(late - after) < 0.1)
    # the windows across the step say one or the other, nothing in between
    assert all(min(abs(v - before), abs(v - after)) < 0.1 for v in res.latencies_ms)


def test_silence_and_unrelated_output_give_no_windows() -> None:
    silent = simulate(np.zeros(3 * RATE, dtype=np.int16), 50.0)
    res = measure_latency(silent)
    assert res.windows == 0 and res.skipped_silent == res.windows_total > 0
    assert math.isnan(res.p50)
    other = speechlike(3.0, seed=99)
    times = T0 + np.arange(len(other) // F) * FRAME_S
    unrelated = Timelines.build(
        RATE,
        SIGNAL[: len(other)],
        F,
        times,
        [(t + 0.05, f) for t, f in zip(times, frames_of(other), strict=False)],
    )
    res = measure_latency(unrelated)
    assert res.windows == 0 and res.skipped_weak > 0


def test_delay_outside_the_search_bound_is_not_reported() -> None:
    res = measure_latency(simulate(SIGNAL, 700.0), LatencyParams(max_latency_ms=500.0))
    assert res.windows == 0
    res = measure_latency(simulate(SIGNAL, 700.0), LatencyParams(max_latency_ms=800.0))
    assert res.p50 == pytest.approx(700.0, abs=0.1)


def test_percentiles() -> None:
    p = percentiles(list(range(1, 101)))
    assert p["p50"] == pytest.approx(50.5)
    assert p["p99"] == pytest.approx(99.01)
    assert p["max"] == 100.0
    assert all(math.isnan(v) for v in percentiles([]).values())


def test_timelines_reject_inconsistent_input() -> None:
    with pytest.raises(TimelineError):
        Timelines.build(RATE, np.zeros(2 * F), F, [0.0], [])  # 2 frames, 1 time
    with pytest.raises(TimelineError):
        Timelines.build(RATE, np.zeros(2 * F), F, [1.0, 1.0], [])  # not increasing
    with pytest.raises(TimelineError):
        Timelines(
            RATE, np.zeros(F, np.int16), F, np.zeros(1), np.zeros(2), (np.zeros(F, np.int16),)
        )
    with pytest.raises(ValueError):
        LatencyParams(window_ms=100, hop_ms=200)


def test_timelines_from_call_logs_measure_the_logged_delay() -> None:
    """The same shape as CallEndpoint.send_log / playout_log (with an RTP offset on playout)."""
    x = SIGNAL[: 3 * RATE]
    n = len(x) // F
    step = 960
    send_log = [(i * step, T0 + (i + 1) * FRAME_S) for i in range(n) if i != 7]  # frame 7 unsent
    offset = 123456
    out = np.concatenate([x, np.zeros(5 * F, dtype=np.int16)])  # 5 frames of hang-up silence
    playout_log = [
        ((k * step + offset) % 2**32, T0 + k * FRAME_S + 0.075, "normal") for k in range(n + 5)
    ]
    tl = timelines_from_call_logs(RATE, x, F, send_log, out, playout_log)
    assert len(tl.output_frames) == n + 5
    assert tl.input_times[7] == pytest.approx(T0 + 7 * FRAME_S)  # interpolated
    res = measure_latency(tl)
    assert res.windows >= 10
    assert res.p50 == pytest.approx(75.0, abs=0.1)
    with pytest.raises(TimelineError):
        timelines_from_call_logs(RATE, x, F, [], out, playout_log)
