"""Cascade: both strings agree bit for bit across QBER and seeds; leakage = parities disclosed."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from keyserver.qkd.cascade import CascadeAlice, CascadeBob, schedule


def _run(n: int, qber: float, seed: int) -> tuple[np.ndarray, CascadeAlice, CascadeBob, int]:
    rng = np.random.default_rng(seed)
    alice = rng.integers(0, 2, n, dtype=np.uint8)
    bob = alice.copy()
    errors = rng.random(n) < qber
    bob[errors] ^= 1
    seed_bytes = rng.bytes(32)
    a = CascadeAlice(alice, seed_bytes, 64 * n)
    b = CascadeBob(bob, seed_bytes, schedule(qber, n))
    req = b.first_request()
    disclosed = 0
    while req is not None:
        if req.start_block:
            ans = a.start_pass(req.start_block)
        else:
            ans = a.answer(req.passes, req.lo, req.hi)
        disclosed += ans.shape[0]
        req = b.on_answer(ans)
    assert np.array_equal(b.corrected_bits(), alice)
    return alice, a, b, disclosed


@settings(max_examples=25, deadline=None)
@given(
    qber=st.floats(0.005, 0.08),
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(2_000, 70_000),
)
def test_cascade_corrects_every_error(qber: float, seed: int, n: int) -> None:
    _, a, b, disclosed = _run(n, qber, seed)
    assert a.leaked_bits == b.leaked_bits == disclosed


def test_cascade_across_segments_and_efficiency() -> None:
    # more than one permutation segment (65536 bits), QBER in the target range
    for qber, seed in ((0.02, 1), (0.03, 2), (0.035, 3)):
        n = 300_000
        rng = np.random.default_rng(seed)
        _, a, b, _ = _run(n, qber, seed)
        errors = b.corrected
        q = errors / n
        h = -q * math.log2(q) - (1 - q) * math.log2(1 - q)
        assert a.leaked_bits / (n * h) < 1.15
        del rng


def test_pass_zero_length_and_tiny_strings() -> None:
    for n in (2, 3, 17, 64):
        _run(n, 0.1, n)


def test_pass_permutations_separate_pairs_like_a_shuffle() -> None:
    """Two positions of one 64 Ki segment (or of two) fall into the same half of the string in
    about half the passes: the large final passes can separate any pair of residual errors."""
    from keyserver.qkd.cascade import SEGMENT, _fwd, _inv, pass_tables

    n = 3 * SEGMENT + 1929
    rng = np.random.default_rng(5)
    same = 0
    trials = 0
    for p in range(40):
        t = pass_tables(rng.bytes(32), range(p, p + 1), n)
        half = t.padded // 2
        for a, b in (
            (10, 20),
            (SEGMENT + 5, SEGMENT + 7),
            (3 * SEGMENT + 3, 3 * SEGMENT + 900),
            (17, 2 * SEGMENT + 17),
        ):
            (ra, ca), (rb, cb) = (_fwd(t.pi[0], t.sigma[0], t.delta[0], t.f, x) for x in (a, b))
            qa, qb = ra * t.segs + ca, rb * t.segs + cb
            assert _inv(t.pi_inv[0], t.sigma_inv[0], t.delta[0], t.f, t.segs, qa) == a
            assert _inv(t.pi_inv[0], t.sigma_inv[0], t.delta[0], t.f, t.segs, qb) == b
            same += int((qa < half) == (qb < half))
            trials += 1
    assert 0.3 < same / trials < 0.7
