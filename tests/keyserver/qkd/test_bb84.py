"""The simulated decoy-state BB84 link against the formulas of REFERENCE.md section 5."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math

import numpy as np
import pytest

from keyserver.qkd.decoy import DecoyEstimate
from keyserver.qkd.physics import click_probabilities
from keyserver.qkd.simulator import (
    BlockResult,
    LinkParams,
    LinkSimulator,
    add_simulate_arguments,
    simulate_command,
    theory_key_rate,
)

PULSES = 200_000_000
SIGMAS = 5.0


def h2(p: float) -> float:
    return -p * math.log2(p) - (1 - p) * math.log2(1 - p)


def reference_gain_qber(params: LinkParams, intensity: float) -> tuple[float, float]:
    """REFERENCE.md section 5, written out independently of the simulator's model."""
    eta = params.detector_efficiency * 10 ** (-params.alpha_db_per_km * params.distance_km / 10)
    y0 = params.dark_count
    q = y0 + 1 - math.exp(-eta * intensity)
    eq = 0.5 * y0 + params.misalignment * (1 - math.exp(-eta * intensity))
    return q, eq / q


def reference_rate(distance_km: float) -> float:
    p = LinkParams(distance_km=distance_km)
    eta = p.detector_efficiency * 10 ** (-p.alpha_db_per_km * distance_km / 10)
    y0, mu = p.dark_count, p.mu
    q_mu, e_mu = reference_gain_qber(p, mu)
    y1 = y0 + eta - y0 * eta
    e1 = (0.5 * y0 + p.misalignment * eta) / y1
    q1 = y1 * mu * math.exp(-mu)
    return max(0.0, 0.5 * (-q_mu * 1.22 * h2(e_mu) + q1 * (1 - h2(e1))))


@pytest.fixture(scope="module")
def block_10km() -> BlockResult:
    return LinkSimulator(LinkParams(), seed=11, compute_bob_key=True).run_block(PULSES)


@pytest.mark.parametrize(
    ("distance", "expected"), [(0.0, 2.55e-3), (50.0, 2.23e-4), (100.0, 1.72e-5)]
)
def test_theory_rate_matches_gys_figures(distance: float, expected: float) -> None:
    rate = theory_key_rate(LinkParams(distance_km=distance))
    assert rate == pytest.approx(expected, rel=0.01)
    assert rate == pytest.approx(reference_rate(distance), rel=1e-4)


def test_theory_rate_reaches_zero_near_142_km() -> None:
    assert theory_key_rate(LinkParams(distance_km=138.0)) > 0
    assert theory_key_rate(LinkParams(distance_km=146.0)) == 0.0


@pytest.mark.parametrize("distance", [0.0, 25.0, 80.0])
def test_channel_model_equals_reference_formulas(distance: float) -> None:
    params = LinkParams(distance_km=distance)
    for intensity in (params.mu, params.nu):
        q, e = reference_gain_qber(params, intensity)
        clicks = click_probabilities(params, intensity)
        assert clicks.gain == pytest.approx(q, rel=1e-5)
        # the model counts a dark click only when no photon clicked: differs by O(Y0 * Q)
        assert clicks.qber == pytest.approx(e, rel=1e-4)


def test_simulated_gain_and_qber_agree_with_formulas(block_10km: BlockResult) -> None:
    params = LinkParams()
    b = block_10km
    assert not b.aborted, b.reason
    q_mu, e_mu = reference_gain_qber(params, params.mu)
    n_signal = PULSES * params.p_signal
    assert abs(b.gain - q_mu) < SIGMAS * math.sqrt(q_mu * (1 - q_mu) / n_signal)
    kept = b.frames * params.frame_bits - b.frames_failed * params.frame_bits
    assert abs(b.qber - e_mu) < SIGMAS * math.sqrt(e_mu * (1 - e_mu) / kept)
    assert abs(b.qber_sample - e_mu) < SIGMAS * math.sqrt(e_mu * (1 - e_mu) / b.sample_bits)
    q_nu, e_nu = reference_gain_qber(params, params.nu)
    n_decoy = PULSES * params.p_decoy
    assert abs(b.decoy_gain - q_nu) < SIGMAS * math.sqrt(q_nu * (1 - q_nu) / n_decoy)
    decoy_sifted = n_decoy * q_nu * params.sift_probability
    assert abs(b.decoy_qber - e_nu) < SIGMAS * math.sqrt(e_nu * (1 - e_nu) / decoy_sifted)
    sifted_expected = n_signal * q_mu * params.sift_probability
    assert abs(b.sifted_bits - sifted_expected) < SIGMAS * math.sqrt(sifted_expected)


def test_sifted_bits_and_qber_at_50_km() -> None:
    params = LinkParams(distance_km=50.0)
    b = LinkSimulator(params, seed=3).run_block(PULSES)
    q_mu, e_mu = reference_gain_qber(params, params.mu)
    n_signal = PULSES * params.p_signal
    assert abs(b.gain - q_mu) < SIGMAS * math.sqrt(q_mu / n_signal)
    assert abs(b.qber_sample - e_mu) < SIGMAS * math.sqrt(e_mu * (1 - e_mu) / b.sample_bits)


def test_key_at_10_km_is_positive_below_the_bound_and_identical_for_bob(
    block_10km: BlockResult,
) -> None:
    params = LinkParams()
    b = block_10km
    assert not b.aborted and b.reason is None
    assert b.secret_bits > 0 and len(b.key) * 8 == b.secret_bits
    assert b.bob_key == b.key
    per_signal_pulse = b.secret_bits / (PULSES * params.p_signal)
    assert 0.2 * theory_key_rate(params) < per_signal_pulse < theory_key_rate(params)
    assert b.secret_bits_per_pulse == b.secret_bits / PULSES
    assert 1.0 < b.ec_efficiency < 1.8
    assert b.seconds_simulated == pytest.approx(PULSES / params.clock_hz)
    # the decoy bounds are conservative: Y1_L below and e1_U above the channel's true values
    eta = params.detector_efficiency * 10 ** (-params.alpha_db_per_km * params.distance_km / 10)
    assert 0 < b.y1_lower < eta + params.dark_count
    assert b.e1_upper > params.misalignment
    assert not b.eve_alarm


@pytest.mark.parametrize("distance", [160.0, 250.0])
def test_no_key_far_beyond_the_bound(distance: float) -> None:
    b = LinkSimulator(LinkParams(distance_km=distance), seed=5).run_block(PULSES)
    assert b.aborted and b.reason
    assert b.key == b"" and b.secret_bits == 0


def test_eavesdropper_raises_qber_by_about_a_quarter_of_the_fraction() -> None:
    fraction = 0.2
    clean = LinkSimulator(LinkParams(), seed=21).run_block(PULSES)
    attacked = LinkSimulator(LinkParams(eve_fraction=fraction), seed=21).run_block(PULSES)
    rise = attacked.qber_sample - clean.qber_sample
    model = fraction * (0.25 - LinkParams().misalignment / 2)  # Eve wrong half the time
    sigma = math.sqrt(2 * 0.08 / attacked.sample_bits)
    assert abs(rise - model) < SIGMAS * sigma
    assert rise == pytest.approx(fraction / 4, rel=0.3)
    assert attacked.eve_alarm and not clean.eve_alarm
    # the gain-preserving attack leaves the signal gain unchanged
    assert attacked.gain == pytest.approx(clean.gain, rel=0.01)


@pytest.mark.parametrize("fraction", [0.6, 1.0])
def test_eavesdropper_above_threshold_stops_key(fraction: float) -> None:
    b = LinkSimulator(LinkParams(eve_fraction=fraction), seed=8).run_block(PULSES)
    assert b.aborted and b.reason == "qber_above_threshold"
    assert b.key == b"" and b.secret_bits == 0 and b.eve_alarm
    expected = click_probabilities(LinkParams(eve_fraction=fraction), 0.48).qber
    assert abs(b.qber_sample - expected) < SIGMAS * math.sqrt(0.25 / b.sample_bits)


def test_failed_verification_never_yields_key(block_10km: BlockResult) -> None:
    sim = LinkSimulator(LinkParams(), seed=1)
    rng = np.random.default_rng(0)
    alice = rng.integers(0, 2, 200_000, dtype=np.uint8)
    bob = alice.copy()
    bob[12345] ^= 1
    estimate = DecoyEstimate(1.7e-6, 0.027, 0.04, 0.008, 0.6)
    base = dataclasses.replace(block_10km, key=b"", bob_key=None, aborted=True, reason=None)
    failed = sim.verify_and_amplify(dataclasses.replace(base), alice, bob, 50_000, estimate)
    assert failed.aborted and failed.reason == "verification_failed"
    assert failed.key == b"" and failed.secret_bits == 0
    ok = sim.verify_and_amplify(dataclasses.replace(base), alice, alice.copy(), 50_000, estimate)
    assert not ok.aborted and len(ok.key) * 8 == ok.secret_bits > 0


def test_seeded_runs_are_reproducible() -> None:
    params = LinkParams(distance_km=20.0)
    a = LinkSimulator(params, seed=99).run_block(50_000_000)
    b = LinkSimulator(params, seed=99).run_block(50_000_000)
    c = LinkSimulator(params, seed=100).run_block(50_000_000)
    assert a == b
    assert a.key and a.key != c.key


def test_params_are_validated() -> None:
    for bad in (
        {"mu": 0.05},  # below nu
        {"distance_km": -1.0},
        {"p_signal": 0.9, "p_decoy": 0.1},
        {"eve_fraction": 1.5},
        {"qber_abort": 0.6},
        {"decoder": "magic"},
        {"dark_count": float("nan")},
    ):
        with pytest.raises(ValueError):
            LinkParams(**bad)
    with pytest.raises(ValueError):
        LinkSimulator(LinkParams(), seed=1).run_block(0)


def test_simulate_command_prints_the_json_fields(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_simulate_arguments(parser)
    args = parser.parse_args(["--distance-km", "10", "--pulses", "1e8", "--seed", "4", "--json"])
    assert simulate_command(args) == 0
    report = json.loads(capsys.readouterr().out)
    for key in (
        "gain",
        "qber",
        "sifted_bits",
        "secret_bits",
        "secret_bits_per_pulse",
        "theory_bits_per_pulse",
        "ec_efficiency",
        "aborted",
        "seconds",
    ):
        assert key in report
    assert report["aborted"] is False and report["secret_bits"] > 0
    assert report["secret_bits_per_pulse"] == report["secret_bits"] / 1e8
    bad = parser.parse_args(["--mu", "0.01", "--json"])
    assert simulate_command(bad) == 2
