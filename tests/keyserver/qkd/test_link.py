"""The whole link in one process (the same machines as the modules): keys, leakage, physics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from keyserver.qkd import messages as m
from keyserver.qkd.classicalchannel import HEADER, TAG_BYTES
from keyserver.qkd.finitekey import expected_counts
from keyserver.qkd.physics import LinkParams
from keyserver.qkd.simulate import LinkRun
from tests.keyserver.qkd.modulesupport import find_key_windows

BLOCK = 300_000_000


@pytest.fixture(scope="module")
def run10() -> LinkRun:
    run = LinkRun(LinkParams(distance_km=10.0, block_pulses=BLOCK), seed=11, record=True)
    run.run_block()
    run.run_block()
    return run


def _messages(run: LinkRun, side: str) -> list[m.Message]:
    return [m.decode(f[HEADER.size : -TAG_BYTES]) for s, f in run.frames_recorded if s == side]


def test_both_sides_hold_the_same_keys_under_the_same_ids(run10: LinkRun) -> None:
    assert all(not b.aborted for b in run10.blocks)
    assert run10.alice_keys.keys and run10.alice_keys.keys == run10.bob_keys.keys
    assert all(len(k) == 128 for k in run10.alice_keys.keys.values())


def test_leakage_equals_the_bits_disclosed_on_the_channel(run10: LinkRun) -> None:
    alice = _messages(run10, "alice")
    for stats in run10.blocks:
        answers = [x for x in alice if isinstance(x, m.ParityAnswer) and x.block == stats.block]
        assert sum(a.count for a in answers) == stats.cascade_leak
        assert all(len(a.parities) == (a.count + 7) // 8 for a in answers)
        verify = [x for x in alice if isinstance(x, m.Verify) and x.block == stats.block]
        assert len(verify) == 1 and 8 * len(verify[0].tag) == stats.verification_leak
        n = stats.sifted_bits
        h = -stats.qber * math.log2(stats.qber) - (1 - stats.qber) * math.log2(1 - stats.qber)
        assert stats.ec_efficiency == pytest.approx(stats.cascade_leak / (n * h))
        assert stats.ec_efficiency < 1.2


def test_no_key_bit_window_on_the_classical_channel(run10: LinkRun) -> None:
    record = b"".join(f for _, f in run10.frames_recorded)
    keys = list(run10.alice_keys.keys.values())
    assert find_key_windows(record, keys) == 0
    # the check itself finds a window that is there, at any bit offset
    shifted = int.from_bytes(b"\x00" + keys[3][10:30], "big") >> 3
    assert find_key_windows(record + shifted.to_bytes(21, "big"), keys) > 0


def test_simulated_counts_agree_with_the_closed_form_model(run10: LinkRun) -> None:
    p = run10.plan
    for stats in run10.blocks:
        expected, qber = expected_counts(p, stats.pulses)
        for got, exp in (
            (stats.n_z, expected.n_z),
            (stats.n_x, expected.n_x),
            (stats.m_x, expected.m_x),
        ):
            for g, e in zip(got, exp, strict=True):
                assert abs(g - e) <= 5 * math.sqrt(e) + 1, (got, exp)
        sigma = math.sqrt(qber * (1 - qber) / stats.sifted_bits)
        assert abs(stats.qber - qber) < 5 * sigma


@pytest.mark.parametrize("eve", [0.5, 1.0])
def test_intercept_resend_above_threshold_yields_no_key(eve: float) -> None:
    run = LinkRun(LinkParams(distance_km=10.0, block_pulses=BLOCK, eve_fraction=eve), seed=3)
    stats = run.run_block()
    assert stats.aborted and stats.reason == m.AbortReason.QBER_ABOVE_THRESHOLD
    assert stats.qber_x == pytest.approx(0.033 + eve * (0.25 - 0.033 / 2), abs=0.02)
    assert not run.alice_keys.keys and not run.bob_keys.keys


def test_seeded_runs_are_reproducible_and_unseeded_ones_differ() -> None:
    small = LinkParams(distance_km=5.0, block_pulses=150_000_000)
    a, b = LinkRun(small, seed=4), LinkRun(small, seed=4)
    a.run_block()
    b.run_block()
    assert a.alice_keys.keys == b.alice_keys.keys
    c = LinkRun(small, seed=None)
    c.run_block()
    assert set(c.alice_keys.keys.values()).isdisjoint(a.alice_keys.keys.values())
    bits = np.unpackbits(np.frombuffer(b"".join(a.alice_keys.keys.values()), dtype=np.uint8))
    assert abs(bits.mean() - 0.5) < 5 * 0.5 / math.sqrt(bits.size)
