"""qphone.measure.cpu: CPU of one real `qphone answer` process during a real call."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from qphone.measure.cpu import CpuMeasureError, measure_endpoint_cpu, process_cpu_seconds
from tests.support.paths import SAMPLES

SAMPLE = SAMPLES / "speech_a_48k.wav"


def test_process_cpu_seconds_counts_this_process() -> None:
    before = process_cpu_seconds(os.getpid())
    t0 = time.process_time()
    while time.process_time() - t0 < 0.3:  # burn CPU in this process
        sum(range(1000))
    after = process_cpu_seconds(os.getpid())
    assert after - before >= 0.2
    with pytest.raises(CpuMeasureError):
        process_cpu_seconds(2**22 + 12345)  # beyond pid_max on Linux: no such process


def test_endpoint_cpu_of_a_short_call(keyserver_pair: Path) -> None:
    # through the session's keyserver pair (measure_endpoint_cpu's kme_dir) rather than a pair
    # of its own: the same running_keyserver started it, one start and first block fewer
    r = measure_endpoint_cpu(SAMPLE, 3.0, kme_dir=keyserver_pair, idle_seconds=0.5)
    # the call ran until a --duration (both sides have one) ended it, and was timed
    assert r.end_reason in ("duration of 3 s reached", "peer hung up (duration of 3 s reached)")
    assert r.frames_sent > 0
    assert r.call_wall_s > 0
    assert r.call_fraction > 0  # the call used CPU (how much: qphone bench cpu)
    assert r.idle_fraction >= 0
    s = r.summary()
    assert s["endpoint_cpu_fraction"] == pytest.approx(r.call_fraction, abs=1e-4)
    assert s["bitrate"] == 24000 and s["bandwidth"] == "wb"
