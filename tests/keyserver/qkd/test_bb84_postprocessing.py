"""BB84 post-processing pieces: Toeplitz hashing, tags, LDPC codes and decoders, decoy bounds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.linalg import toeplitz

from keyserver.qkd.decoy import IntensityCounts, estimate_single_photon, secret_key_length
from keyserver.qkd.ldpc_codes import binary_entropy, random_code, syndrome_length
from keyserver.qkd.ldpc_decoder import LayeredMinSumDecoder, LdpcBpDecoder
from keyserver.qkd.ldpc_reconciliation import LdpcReconciler
from keyserver.qkd.physics import LinkParams, click_probabilities, single_photon
from keyserver.qkd.privacyamplification import (
    frame_tags,
    toeplitz_hash,
    toeplitz_seed_length,
    toeplitz_tag,
)


def slow_toeplitz(bits: np.ndarray, seed: np.ndarray, out_len: int) -> np.ndarray:
    n = bits.shape[0]
    # T[i, j] = t[i - j + n - 1]: first column t[n-1 : n-1+out_len], first row t[n-1], ..., t[0]
    matrix = toeplitz(seed[n - 1 : n - 1 + out_len], seed[n - 1 :: -1])
    product: np.ndarray = (matrix.astype(np.int64) @ bits.astype(np.int64)) % 2
    return product


@st.composite
def hash_inputs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    n = draw(st.integers(1, 300))
    out_len = draw(st.integers(1, 80))
    x = np.array(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)), dtype=np.uint8)
    y = np.array(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)), dtype=np.uint8)
    length = toeplitz_seed_length(n, out_len)
    t = np.array(
        draw(st.lists(st.integers(0, 1), min_size=length, max_size=length)), dtype=np.uint8
    )
    return x, y, t, out_len


@settings(max_examples=150, deadline=None)
@given(hash_inputs())
def test_toeplitz_hash_is_the_toeplitz_linear_map(
    data: tuple[np.ndarray, np.ndarray, np.ndarray, int],
) -> None:
    x, y, t, out_len = data
    hx = toeplitz_hash(x, t, out_len)
    assert np.array_equal(hx, slow_toeplitz(x, t, out_len))
    assert np.array_equal(toeplitz_hash(x ^ y, t, out_len), hx ^ toeplitz_hash(y, t, out_len))
    assert toeplitz_tag(x, t, out_len) == np.packbits(hx).tobytes()


def test_toeplitz_hash_large_input_matches_packed_computation() -> None:
    rng = np.random.default_rng(2)
    n, out_len = 300_000, 64
    x = rng.integers(0, 2, n, dtype=np.uint8)
    t = rng.integers(0, 2, toeplitz_seed_length(n, out_len), dtype=np.uint8)
    assert np.packbits(toeplitz_hash(x, t, out_len)).tobytes() == toeplitz_tag(x, t, out_len)
    y = x.copy()
    y[n // 2] ^= 1
    assert toeplitz_tag(x, t, out_len) != toeplitz_tag(y, t, out_len)


def test_toeplitz_hash_rejects_bad_shapes() -> None:
    x = np.zeros(10, dtype=np.uint8)
    with pytest.raises(ValueError):
        toeplitz_hash(x, np.zeros(10, dtype=np.uint8), 4)
    with pytest.raises(ValueError):
        toeplitz_hash(x, np.zeros(13, dtype=np.uint8), 0)


def test_frame_tags_are_a_linear_hash() -> None:
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 2, (5, 1000), dtype=np.uint8)
    r = rng.integers(0, 2, (1000, 16), dtype=np.uint8)
    expected = (frames.astype(np.int64) @ r.astype(np.int64)) % 2
    frames_tags = frame_tags(frames, r)
    assert np.array_equal(frames_tags, expected)
    flipped = frames.copy()
    flipped[2, 17] ^= 1
    changed = np.any(frame_tags(flipped, r) != frames_tags, axis=1)
    assert list(changed) == [False, False, bool(r[17].any()), False, False]


def test_random_code_structure() -> None:
    code = random_code(4096, 1024, seed=7)
    h = code.matrix.toarray()
    assert h.shape == (1024, 4096) and h.max() == 1  # no repeated edges
    col_deg = h.sum(axis=0)
    assert set(np.unique(col_deg)) <= {2, 3, 6}
    row_deg = h.sum(axis=1)
    assert row_deg.max() - row_deg.min() <= 2
    again = random_code(4096, 1024, seed=7)
    assert (again.matrix != code.matrix).nnz == 0  # Alice and Bob build the same matrix
    x = np.random.default_rng(0).integers(0, 2, (3, 4096), dtype=np.uint8)
    assert np.array_equal(code.syndromes(x), (x.astype(np.int64) @ h.T.astype(np.int64)) % 2)


def test_syndrome_length_follows_the_qber() -> None:
    lengths = [syndrome_length(8192, q) for q in (0.01, 0.03, 0.05, 0.08)]
    assert lengths == sorted(lengths)
    for q, m in zip((0.01, 0.03, 0.05, 0.08), lengths, strict=True):
        assert m >= 8192 * binary_entropy(q)  # never below the Shannon limit


def test_layered_decoder_and_ldpc_library_agree() -> None:
    rng = np.random.default_rng(4)
    n, p = 2048, 0.03
    code = random_code(n, syndrome_length(n, p), seed=1)
    errors = (rng.random((20, n)) < p).astype(np.uint8)
    syndromes = code.syndromes(errors)
    fast = LayeredMinSumDecoder(code, max_iter=40).decode(syndromes, p)
    reference = LdpcBpDecoder(code, max_iter=100).decode(syndromes, p)
    assert fast.converged.sum() >= 17
    for result in (fast, reference):
        ok = result.converged
        assert np.array_equal(code.syndromes(result.errors[ok]), syndromes[ok])
    both = fast.converged & reference.converged
    assert both.sum() >= 15
    assert np.array_equal(fast.errors[both], errors[both])
    assert np.array_equal(reference.errors[both], errors[both])


def test_reconciler_drops_failed_frames_and_counts_leakage() -> None:
    rng = np.random.default_rng(5)
    rec = LdpcReconciler(2048)
    alice = rng.integers(0, 2, 2048 * 6 + 100, dtype=np.uint8)
    bob = alice ^ np.asarray(rng.random(alice.shape[0]) < 0.03, dtype=np.uint8)
    bob[:2048] ^= np.asarray(rng.random(2048) < 0.25, dtype=np.uint8)  # frame 0 is hopeless
    tags = rng.integers(0, 2, (2048, 16), dtype=np.uint8)
    result = rec.reconcile(alice, bob, 0.03, tags)
    assert result.frames == 6 and result.frames_failed >= 1
    kept = result.frames - result.frames_failed
    assert np.array_equal(result.alice, result.bob)
    assert result.alice.shape[0] == kept * 2048
    assert result.leaked_bits == kept * (result.syndrome_bits_per_frame + 16)


def test_decoy_bounds_are_conservative_and_tight_with_large_statistics() -> None:
    params = LinkParams(distance_km=30.0)
    n = 10**12  # expected counts, almost no fluctuation margin
    counts = {}
    for name, intensity, share in (
        ("s", params.mu, params.p_signal),
        ("d", params.nu, params.p_decoy),
        ("v", 0.0, params.p_vacuum),
    ):
        c = click_probabilities(params, intensity)
        pulses = int(n * share)
        det = round(pulses * c.gain)
        sifted = det // 2
        counts[name] = IntensityCounts(pulses, det, sifted, round(sifted * c.qber))
    est = estimate_single_photon(counts["s"], counts["d"], counts["v"], params.mu, params.nu, 3.0)
    true = single_photon(params)
    assert est.valid
    assert 0.9 * true.y1 < est.y1_lower < true.y1
    assert true.e1 < est.e1_upper < 1.3 * true.e1
    assert est.q1_lower == pytest.approx(est.y1_lower * params.mu * math.exp(-params.mu))
    assert secret_key_length(1_000_000, est, 300_000, 64, 128) > 0
    assert secret_key_length(1_000_000, est, 900_000, 64, 128) == 0
