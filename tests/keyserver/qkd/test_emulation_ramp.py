"""The emulated link's block ramp: a short first block (a link holds key soon after it starts),
then doubling up to the planned block, each block's key from its own counts; the receiver
accepts exactly the ramp's sizes."""

from __future__ import annotations

import dataclasses
import itertools
import random
import statistics

import pytest

from keyserver.qkd.emulation import (
    MIN_BLOCK_SECONDS,
    RAMP_RATE_FRACTION,
    ReportError,
    block_schedule,
    block_sizes,
    check_report,
    first_block_pulses,
    report,
    sample_block,
)
from keyserver.qkd.finitekey import expected_key_length, optimised
from keyserver.qkd.physics import LinkParams


def _rate(params: LinkParams, pulses: int) -> float:
    return expected_key_length(params, pulses, params.ec_efficiency_plan) / pulses


@pytest.mark.parametrize("distance_km", [1.0, 10.0, 50.0, 70.0, 90.0])
def test_the_ramp_starts_short_doubles_and_ends_at_the_plan(distance_km: float) -> None:
    p = optimised(LinkParams(distance_km=distance_km))
    sizes = block_sizes(p)
    assert sizes[-1] == p.block_pulses
    assert all(b == min(2 * a, p.block_pulses) for a, b in itertools.pairwise(sizes))
    first = sizes[0]
    assert first == first_block_pulses(p)
    assert first % p.frame_pulses == 0 or first == p.block_pulses
    assert _rate(p, first) >= RAMP_RATE_FRACTION * _rate(p, p.block_pulses)
    assert first >= min(p.block_pulses, MIN_BLOCK_SECONDS * p.clock_hz)
    # the schedule is the ramp, then the planned block for ever
    assert list(itertools.islice(block_schedule(p), len(sizes) + 2)) == [
        *sizes,
        p.block_pulses,
        p.block_pulses,
    ]


def test_a_long_link_gets_its_first_key_within_a_short_block() -> None:
    p = optimised(LinkParams(distance_km=90.0))  # a 300 s planned block
    assert p.block_pulses / p.clock_hz == pytest.approx(300.0)
    first = first_block_pulses(p)
    assert first / p.clock_hz <= 40.0
    outcomes = [sample_block(p, i, random.Random(i), pulses=first) for i in range(40)]
    assert sum(o.aborted for o in outcomes) <= 2
    mean = statistics.fmean(o.secret_bits for o in outcomes)
    assert mean == pytest.approx(expected_key_length(p, first, 1.09), rel=0.15)


def test_the_receiver_accepts_the_ramp_sizes_and_no_other() -> None:
    p = optimised(LinkParams(distance_km=70.0))
    sizes = block_sizes(p)
    for i, pulses in enumerate(sizes):
        outcome = sample_block(p, i, random.Random(i), pulses=pulses)
        msg = report(outcome, 0, False)
        assert check_report(p, msg, None).secret_bits == outcome.secret_bits
    msg = report(sample_block(p, 9, random.Random(9), pulses=sizes[0]), 0, False)
    for wrong in (sizes[0] + p.frame_pulses, sizes[0] // 2, p.block_pulses + 1):
        with pytest.raises(ReportError):
            check_report(p, dataclasses.replace(msg, pulses=wrong), None)
    for bad in (0, p.block_pulses + 1):
        with pytest.raises(ValueError):
            sample_block(p, 1, random.Random(1), pulses=bad)
