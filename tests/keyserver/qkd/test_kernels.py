"""Sifting and quantum-channel kernels against straightforward numpy references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyserver.qkd import postprocessing as pp
from keyserver.qkd import quantumchannel as qc
from keyserver.qkd.physics import LinkParams

# -- sifting ---------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3000), st.integers(0, 2**32 - 1))
def test_positions_from_gaps_match_cumsum(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    gaps = rng.integers(1, 2**20, n - 1).astype("<u4")
    first = int(rng.integers(0, 1000))
    want = first + np.concatenate(([0], np.cumsum(gaps, dtype=np.uint64)))
    pos, status = pp._positions_from_gaps(first, gaps, int(want[-1]) + 1)
    assert status == 0 and np.array_equal(pos, want)
    assert pp._positions_from_gaps(first, gaps, int(want[-1]))[1] == 2
    if n > 1:
        gaps[rng.integers(0, n - 1)] = 0
        assert pp._positions_from_gaps(first, gaps, 2**62)[1] == 1


def _reference_sift_alice(states: np.ndarray, bob_bases: np.ndarray) -> tuple[np.ndarray, ...]:
    bases = (states >> 1) & 1
    match = bases == bob_bases
    k = states >> 2
    z = match & (bases == 0)
    x = match & (bases == 1)
    nz = np.bincount(k[z], minlength=3)
    nx = np.bincount(k[x], minlength=3)
    return (np.packbits(bases), k[match], states[z] & 1, np.packbits(states[x] & 1), nz, nx)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5000), st.integers(0, 2**32 - 1))
def test_sift_kernels_match_the_reference(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    states = (
        rng.integers(0, 3, n) << 2 | rng.integers(0, 2, n) << 1 | rng.integers(0, 2, n)
    ).astype(np.uint8)
    bob_bases = (rng.random(n) < 0.3).astype(np.uint8)
    bob_bits = rng.integers(0, 2, n).astype(np.uint8)
    got = pp._sift_alice(states, np.packbits(bob_bases))
    want = _reference_sift_alice(states, bob_bases)
    for g, w in zip(got, want, strict=True):
        assert np.array_equal(g, w)
    a_bases, intens, _, x_bits, nz, nx = got
    z_bits, bnz, bnx, bmx, status = pp._sift_bob(a_bases, bob_bases, bob_bits, intens, x_bits)
    assert status == 0
    match = ((states >> 1) & 1) == bob_bases
    xm = match & (bob_bases == 1)
    assert np.array_equal(z_bits, bob_bits[match & (bob_bases == 0)])
    assert np.array_equal(bnz, nz) and np.array_equal(bnx, nx)
    errors = xm & ((states & 1) != bob_bits)
    assert np.array_equal(bmx, np.bincount((states >> 2)[errors], minlength=3))


def test_sift_bob_refuses_what_does_not_fit() -> None:
    rng = np.random.default_rng(7)
    n = 1000
    states = (rng.integers(0, 3, n) << 2 | rng.integers(0, 4, n)).astype(np.uint8)
    bob_bases = (rng.random(n) < 0.5).astype(np.uint8)
    bits = rng.integers(0, 2, n).astype(np.uint8)
    a_bases, intens, _, x_bits, _, _ = pp._sift_alice(states, np.packbits(bob_bases))
    assert pp._sift_bob(a_bases, bob_bases, bits, intens, x_bits)[4] == 0
    assert pp._sift_bob(a_bases, bob_bases, bits, intens[:-1], x_bits)[4] == -1
    bad = intens.copy()
    bad[3] = 3
    assert pp._sift_bob(a_bases, bob_bases, bits, bad, x_bits)[4] == -1
    assert pp._sift_bob(a_bases, bob_bases, bits, intens, x_bits[:-1])[4] == -1
    longer = np.concatenate((x_bits, np.zeros(1, np.uint8)))
    assert pp._sift_bob(a_bases, bob_bases, bits, intens, longer)[4] == -1


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_lookup_states_matches_a_dictionary(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pulses = 100_000
    offset = int(rng.integers(0, 10**9))
    cand = np.unique(rng.integers(0, pulses, 3000)).astype(np.uint32)
    cand_states = rng.integers(0, 12, cand.shape[0]).astype(np.uint8)
    extra = rng.integers(0, pulses, 500)
    clicks = np.unique(np.concatenate((rng.choice(cand, 1000), extra))).astype(np.uint64)
    positions = clicks + np.uint64(offset)
    states = np.zeros(positions.shape[0], np.uint8)
    have = np.zeros(positions.shape[0], np.bool_)
    pp._lookup_states(
        cand, cand_states, np.uint64(offset), positions, 0, positions.shape[0], states, have
    )
    table = dict(zip(cand.tolist(), cand_states.tolist(), strict=True))
    for i, c in enumerate(clicks.tolist()):
        assert have[i] == (c in table)
        if c in table:
            assert states[i] == table[c]


# -- quantum channel -------------------------------------------------------------------------


@pytest.mark.parametrize("p", [1e-6, 1e-3, 0.05, 0.5])
def test_bernoulli_positions_are_a_bernoulli_process(p: float) -> None:
    rng = np.random.default_rng(11)
    pulses = 20_000_000 if p < 1e-4 else 2_000_000
    pos = qc.bernoulli_positions(rng, pulses, p)
    assert pos.dtype == np.uint32
    assert pos.size == 0 or (np.all(np.diff(pos.astype(np.int64)) > 0) and pos[-1] < pulses)
    expect = pulses * p
    assert abs(pos.size - expect) < 5 * math.sqrt(expect * (1 - p)) + 1
    if pos.size > 1000:  # geometric gaps: P(gap = 1) = p
        gaps = np.diff(pos.astype(np.int64))
        ones = np.count_nonzero(gaps == 1) / gaps.size
        assert abs(ones - p) < 5 * math.sqrt(p * (1 - p) / gaps.size) + 1e-9
    assert qc.bernoulli_positions(rng, 100, 0.0).size == 0
    assert np.array_equal(qc.bernoulli_positions(rng, 7, 1.0), np.arange(7))


def test_source_and_fibre_states_and_delivery() -> None:
    params = LinkParams(distance_km=10.0)
    rng = np.random.default_rng(3)
    n = 400_000
    cand = np.sort(rng.choice(10 * n, n, replace=False)).astype(np.uint32)
    words = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
    clean = np.array([0.02, 0.005, 1e-6])
    eve = np.zeros(3)
    t0, t1, tz = qc._thresholds(params)
    states, ph_pos, ph = qc._source_and_fibre(rng, cand, words, t0, t1, tz, clean, eve, 0.0, 0.02)
    assert np.array_equal(states, qc.decode_states(words, params))
    idx = np.searchsorted(cand, ph_pos)
    assert np.array_equal(cand[idx], ph_pos)  # photons are candidates, in order
    assert np.array_equal(ph, states[idx] & 3)  # with their basis and bit (no Eve)
    k = states >> 2
    delivered = np.zeros(n, bool)
    delivered[idx] = True
    assert delivered[k == 0].all()  # delivery probability p_max: no draw, always
    for i in (1, 2):
        m = int(np.count_nonzero(k == i))
        frac = clean[i] / 0.02
        got = int(np.count_nonzero(delivered[k == i]))
        assert abs(got - m * frac) < 5 * math.sqrt(m * frac * (1 - frac)) + 1


def test_source_and_fibre_with_eve_resends_in_her_basis() -> None:
    params = LinkParams(distance_km=10.0)
    rng = np.random.default_rng(4)
    n = 200_000
    cand = np.arange(n, dtype=np.uint32)
    words = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
    t0, t1, tz = qc._thresholds(params)
    clean = np.array([0.02, 0.01, 1e-6])
    eve = np.array([0.02, 0.02, 0.0])
    states, ph_pos, ph = qc._source_and_fibre(rng, cand, words, t0, t1, tz, clean, eve, 1.0, 0.02)
    sent = states[ph_pos]
    assert np.all((sent >> 2) < 2)  # Eve finds nothing in vacuum
    same_basis = ((sent >> 1) & 1) == (ph >> 1)
    assert np.array_equal(ph[same_basis] & 1, sent[same_basis] & 1)  # her basis: her bit right
    wrong = np.count_nonzero((ph[~same_basis] & 1) != (sent[~same_basis] & 1))
    m = int(np.count_nonzero(~same_basis))
    assert abs(wrong - m / 2) < 5 * math.sqrt(m / 4) + 1


def test_detect_is_the_union_of_photons_and_dark_counts() -> None:
    rng = np.random.default_rng(5)
    ph_pos = np.sort(rng.choice(1_000_000, 50_000, replace=False)).astype(np.uint32)
    ph = rng.integers(0, 4, ph_pos.shape[0]).astype(np.uint8)
    dark = np.sort(
        np.concatenate((rng.choice(1_000_000, 3000, replace=False), ph_pos[:100]))
    ).astype(np.uint32)
    dark = np.unique(dark)
    union = np.union1d(ph_pos, dark).astype(np.uint32)
    words = rng.integers(0, 2**32, union.shape[0], dtype=np.uint64).astype(np.uint32)
    thr = np.uint64(round(0.8 * 2**32))
    pos, bases, bits = qc._detect(rng, ph_pos, ph, dark, words, thr, 0.0)
    assert np.array_equal(pos, union)
    assert np.array_equal(bases, (words.astype(np.uint64) >= thr).astype(np.uint8))
    at = np.searchsorted(ph_pos, pos)
    is_photon = (at < ph_pos.shape[0]) & (ph_pos[np.minimum(at, ph_pos.shape[0] - 1)] == pos)
    own = is_photon.copy()
    own[is_photon] = (ph[at[is_photon]] >> 1) == bases[is_photon]
    assert np.array_equal(bits[own], ph[at[own]] & 1)  # no misalignment: the photon's bit
    other = ~own
    m = int(np.count_nonzero(other))
    assert abs(int(bits[other].sum()) - m / 2) < 5 * math.sqrt(m / 4) + 1  # random bits


def test_detector_draws_one_basis_word_per_click() -> None:
    params = LinkParams(distance_km=10.0)
    det = qc.Detector(params, np.random.default_rng(1))
    from keyserver.qkd.randomness import RandomSource

    ph = qc.Photons(np.array([3, 7, 9], np.uint32), np.array([0, 1, 2], np.uint8))
    a, b = RandomSource(1, b"x"), RandomSource(1, b"x")
    out = det.detect(ph, 100_000_000, a)
    words = b.uint32(out.positions.shape[0])
    _, p_z = qc.quantised_probabilities(params)
    thr = np.uint64(round(p_z * 2**32))
    assert np.array_equal(out.bases, (words.astype(np.uint64) >= thr).astype(np.uint8))
    assert a.bytes(16) == b.bytes(16)  # both streams at the same place


# -- quantum-channel wire form ---------------------------------------------------------------


def _frame(count: int, pulses: int = 1_000_000, seed: int = 1) -> qc.QuantumFrame:
    rng = np.random.default_rng(seed)
    pos = np.sort(rng.choice(pulses, count, replace=False)).astype(np.uint32)
    states = rng.integers(0, 4, count).astype(np.uint8)
    return qc.QuantumFrame(7, 3, pulses, True, qc.Photons(pos, states))


@pytest.mark.parametrize("count", [0, 1, 1000])
def test_quantum_frame_round_trip(count: int) -> None:
    f = _frame(count)
    data = bytes(qc.encode_frame(f))
    g = qc.decode_frame(data)
    assert (g.block, g.frame, g.pulses, g.last) == (7, 3, 1_000_000, True)
    assert np.array_equal(g.photons.positions, f.photons.positions)
    assert np.array_equal(g.photons.states, f.photons.states)
    wire = qc.encode_frame(f, length_prefix=True)
    assert int.from_bytes(wire[:4], "big") == len(data) and bytes(wire[4:]) == data


def test_quantum_frame_parser_is_strict() -> None:
    f = _frame(100)
    data = bytearray(qc.encode_frame(f))
    head = qc.frame_header_size()
    with pytest.raises(qc.QuantumChannelError):
        qc.decode_frame(bytes(data[:-1]))  # length does not match
    with pytest.raises(qc.QuantumChannelError):
        qc.decode_frame(bytes(data) + b"\0")
    bad = bytearray(data)
    bad[0] ^= 1  # magic
    with pytest.raises(qc.QuantumChannelError):
        qc.decode_frame(bytes(bad))
    bad = bytearray(data)
    bad[head + 4 * 100 + 5] = 4  # a state out of range
    with pytest.raises(qc.QuantumChannelError):
        qc.decode_frame(bytes(bad))
    bad = bytearray(data)
    bad[head : head + 8] = bad[head + 4 : head + 8] + bad[head : head + 4]  # not increasing
    with pytest.raises(qc.QuantumChannelError):
        qc.decode_frame(bytes(bad))
    out = _frame(3, pulses=10)
    out.photons.positions[-1] = 10  # beyond the frame
    with pytest.raises(qc.QuantumChannelError):
        qc.decode_frame(bytes(qc.encode_frame(out)))
