"""The emulated link's sans-I/O core: block outcomes against the physics model and the per-pulse
simulation, the eavesdropper alarm, the receiver's check, and the BlockReport / key frame wire
forms."""

from __future__ import annotations

import dataclasses
import math
import random
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyserver.qkd import messages as m
from keyserver.qkd.blocks import TAG_BITS
from keyserver.qkd.emulation import (
    EXACT_MEAN,
    KeyFrameError,
    ReportError,
    binomial,
    cascade_efficiency,
    check_report,
    decode_key_frame,
    encode_key_frame,
    report,
    sample_block,
)
from keyserver.qkd.finitekey import expected_counts, finite_key, optimised
from keyserver.qkd.messages import AbortReason
from keyserver.qkd.physics import LinkParams, binary_entropy, quantised_probabilities
from keyserver.qkd.simulate import LinkRun

BLOCKS = 300


def _model(params: LinkParams) -> tuple[float, float]:
    """The physics model's secret bits per block and QBER: Lim et al.'s bound on the expected
    counts of a planned block, with the leakage of the project's Cascade."""
    counts, qber = expected_counts(params, params.block_pulses)
    probs, _ = quantised_probabilities(params)
    leak = cascade_efficiency(qber) * counts.total_z * binary_entropy(qber) + TAG_BITS
    return float(finite_key(counts, params, leak, probs).length), qber


@pytest.mark.parametrize("distance_km", [10.0, 70.0])
def test_emulated_key_rate_and_qber_match_the_physics_model(distance_km: float) -> None:
    params = optimised(LinkParams(distance_km=distance_km))
    rng = random.Random(17)
    outcomes = [sample_block(params, i, rng) for i in range(BLOCKS)]
    assert not any(o.aborted for o in outcomes)
    bits, qber = _model(params)
    mean_bits = statistics.fmean(o.secret_bits for o in outcomes)
    mean_qber = statistics.fmean(o.qber for o in outcomes)
    assert mean_bits == pytest.approx(bits, rel=0.05)
    assert mean_qber == pytest.approx(qber, rel=0.05)
    # the block's statistical fluctuation is there, at the size the sifted count implies
    sifted = [o.counts.total_z for o in outcomes]
    expected, _ = expected_counts(params, params.block_pulses)
    assert statistics.pstdev(sifted) == pytest.approx(math.sqrt(expected.total_z), rel=0.2)


def test_emulated_blocks_agree_with_a_per_pulse_block() -> None:
    """One block of the per-pulse simulation (the physics fidelity) against the emulation of the
    same planned link: detections and QBER within 5 %."""
    run = LinkRun(LinkParams(distance_km=10.0, block_pulses=300_000_000), seed=11)
    physics = run.run_block()
    assert not physics.aborted
    rng = random.Random(5)
    emulated = [sample_block(run.plan, i, rng) for i in range(BLOCKS)]
    assert statistics.fmean(o.counts.total_z for o in emulated) == pytest.approx(
        physics.sifted_bits, rel=0.05
    )
    assert statistics.fmean(o.qber for o in emulated) == pytest.approx(physics.qber, rel=0.05)
    assert statistics.fmean(o.qber_x for o in emulated) == pytest.approx(
        physics.m_x[0] / physics.n_x[0], rel=0.05
    )


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.2, 0.5, 1.0])
def test_eve_adds_her_qber_and_the_alarm_rises_when_it_should(fraction: float) -> None:
    params = optimised(LinkParams(distance_km=10.0))
    rng = random.Random(int(fraction * 100) + 1)
    outcomes = [sample_block(params, i, rng, eve_fraction=fraction) for i in range(20)]
    added = fraction * (0.25 - params.misalignment / 2)
    clean = click_qber(params)
    assert statistics.fmean(o.qber_x for o in outcomes) == pytest.approx(clean + added, abs=0.004)
    if fraction == 0.0:
        assert not any(o.aborted for o in outcomes)
    elif fraction == 0.1:
        # the bound prices her in: far less key, no alarm yet
        assert not any(o.aborted for o in outcomes)
        mean = statistics.fmean(o.secret_bits for o in outcomes)
        assert mean < 0.3 * _model(params)[0]
    else:
        # intercept-resend on 20 % or more: every block aborts with an eavesdropper reason (the
        # finite-key bound goes empty before the QBER threshold is reached)
        assert all(o.reason is not None and o.reason.eavesdropper for o in outcomes)
        assert all(o.secret_bits == 0 for o in outcomes)
    if fraction >= 0.5:
        assert all(o.reason == AbortReason.QBER_ABOVE_THRESHOLD for o in outcomes)


def click_qber(params: LinkParams) -> float:
    _, qber = expected_counts(params, 1e9)
    return qber


def test_physics_and_emulation_raise_the_same_alarm() -> None:
    run = LinkRun(LinkParams(distance_km=10.0, block_pulses=300_000_000, eve_fraction=0.5), seed=3)
    physics = run.run_block()
    emulated = sample_block(run.plan, 0, random.Random(2), eve_fraction=0.5)
    assert physics.reason == emulated.reason == AbortReason.QBER_ABOVE_THRESHOLD
    assert emulated.qber_x == pytest.approx(physics.qber_x, abs=0.01)


def test_binomial_sampler_has_the_right_mean_and_variance() -> None:
    rng = random.Random(9)
    for n, p in ((10**9, 3e-9), (10**9, 2e-8), (10**10, 1e-4), (40, 0.9), (7, 0.5)):
        draws = [binomial(rng, n, p) for _ in range(4000)]
        mean, var = n * p, n * p * (1 - p)
        assert statistics.fmean(draws) == pytest.approx(mean, abs=5 * math.sqrt(var / 4000))
        assert statistics.pvariance(draws) == pytest.approx(var, rel=0.15)
        assert all(0 <= d <= n for d in draws)
    assert EXACT_MEAN > 10
    assert binomial(rng, 0, 0.5) == 0 and binomial(rng, 5, 1.0) == 5 and binomial(rng, 5, 0) == 0


def test_receiver_recomputes_the_block_and_refuses_a_report_that_disagrees() -> None:
    params = optimised(LinkParams(distance_km=20.0))
    outcome = sample_block(params, 4, random.Random(1))
    msg = report(outcome, 1024, False)
    back = check_report(params, m.decode(m.encode(msg)), None)  # type: ignore[arg-type]
    assert back.secret_bits == outcome.secret_bits and back.reason is None
    for change in (
        {"secret_bits": msg.secret_bits + 1},
        {"n_z0": msg.n_z0 + 5000},
        {"leaked_bits": msg.leaked_bits - 10_000},
        {"reason": int(AbortReason.QBER_ABOVE_THRESHOLD)},
        {"m_x1": msg.n_x1 + 1},
        {"pulses": msg.pulses + 1},
        {"auth_refill_bits": 100},
    ):
        with pytest.raises(ReportError):
            check_report(params, dataclasses.replace(msg, **change), None)
    aborted = sample_block(params, 5, random.Random(1), eve_fraction=1.0)
    assert check_report(params, report(aborted, 0, False), None).reason == aborted.reason


_U64 = st.integers(0, 2**64 - 1)


@given(fields=st.tuples(*([_U64] * 15)), reason=st.integers(0, 255), test=st.booleans())
def test_block_report_round_trips(fields: tuple[int, ...], reason: int, test: bool) -> None:
    msg = m.BlockReport(*fields, reason, test)  # type: ignore[arg-type]
    wire = m.encode(msg)
    assert m.decode(wire) == msg
    for cut in (1, len(wire) // 2, len(wire) - 1):
        with pytest.raises(m.MessageError):
            m.decode(wire[:cut])
    with pytest.raises(m.MessageError):
        m.decode(wire + b"\x00")
    bad_bool = wire[:-1] + b"\x02"
    with pytest.raises(m.MessageError):
        m.decode(bad_bool)


@given(block=_U64, key=st.binary(max_size=512))
def test_key_frame_round_trips_and_is_strict(block: int, key: bytes) -> None:
    wire = encode_key_frame(block, key)
    assert decode_key_frame(wire) == (block, key)
    for bad in (wire[:-1] if key else wire[:10], wire + b"\x00", b"XXXX" + wire[4:]):
        with pytest.raises(KeyFrameError):
            decode_key_frame(bad)


@given(data=st.binary(max_size=64))
def test_key_frame_parser_refuses_garbage_without_crashing(data: bytes) -> None:
    try:
        block, key = decode_key_frame(data)
    except KeyFrameError:
        return
    assert encode_key_frame(block, key) == data


def test_an_emulated_module_process_imports_no_numeric_libraries() -> None:
    """What ``qkd-keyserver module --config emulated.toml`` imports (the CLI, then the module)."""
    import subprocess
    import sys

    code = (
        "import sys, keyserver.cli as c; c.build_parser(); "
        "import keyserver.qkd.commands, keyserver.qkd.emulatedmodule; "
        "print(sorted(m for m in ('numpy', 'numba', 'scipy', 'matplotlib', 'networkx', 'gmpy2') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
