"""aiortc's stock audio path on loopback (the latency baseline), with the real aiortc stack."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from qphone.measure.aiortcbaseline import (
    FRAME_SAMPLES,
    RATE,
    bench_latency_baseline,
    load_sample,
    run_stock_path,
)
from qphone.measure.latency import measure_latency
from tests.support.paths import SAMPLES

SAMPLE = SAMPLES / "speech_a_48k.wav"


async def test_stock_path_delivers_the_sample_with_a_plausible_latency() -> None:
    tl = await run_stock_path(SAMPLE, 3.0)
    sent = len(tl.input_times)
    assert sent == 3.0 * RATE / FRAME_SAMPLES
    # aiortc's jitter buffer keeps its last prefetched frames: nearly all but those come out
    assert sent - 8 <= len(tl.output_frames) <= sent
    assert all(len(f) == FRAME_SAMPLES for f in tl.output_frames)
    assert np.all(np.diff(tl.input_times) > 0)  # captured in order
    # paced in real time, not sent in a burst: playout starts before the input has all been
    # captured (the pacing interval itself is a figure of `qphone bench latency`)
    assert tl.output_times[0] < tl.input_times[-1]
    assert max(np.abs(f).max() for f in tl.output_frames) > 1000  # audible, not silence
    res = measure_latency(tl)
    assert res.windows >= 10
    assert 0 < res.p50 <= res.p95 <= res.p99 <= res.max  # ordered percentiles (values: bench)
    # every played frame comes after the capture of the input it carries
    assert np.all(res.latencies_ms > 0)


async def test_bench_latency_baseline_reports_percentiles() -> None:
    r = await bench_latency_baseline(SAMPLE, 2.0)
    assert r["windows"] >= 5
    assert 0 < r["stock_m2e_ms_p50"] <= r["stock_m2e_ms_p95"] <= r["stock_m2e_ms_p99"]
    assert r["stock_frames_sent"] == 100
    assert r["stock_capture_interval_ms_p50"] > 0
    # everything was closed: no task of the run is left behind
    await asyncio.sleep(0)
    left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
    assert left == []


def test_load_sample_repeats_and_bounds() -> None:
    pcm = load_sample(SAMPLE, 10.0)  # the sample is 8 s long
    assert len(pcm) == 10 * RATE
    assert np.array_equal(pcm[8 * RATE :], pcm[: 2 * RATE])
    for bad in (0.0, -1.0, math.inf):
        with pytest.raises(ValueError):
            load_sample(SAMPLE, bad)
