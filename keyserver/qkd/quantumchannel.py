"""The quantum channel: Alice's source, the simulated fibre (with Eve), Bob's detector.

This is the only place where simulated photon data crosses between the modules. It is sampled,
never looped over pulses, and agrees with the closed-form model of :mod:`keyserver.qkd.physics`:

* **Source** (transmitter): every pulse has an intensity (mu, nu or vacuum), a basis (Z with
  probability ``p_z``) and a bit, drawn from Alice's :class:`~keyserver.qkd.randomness.RandomSource`
  (4 bytes per pulse: 16 bits for the intensity, 15 for the basis, 1 for the bit, so the
  probabilities are realised to 2^-16; :func:`quantised_probabilities` gives the exact values the
  finite-key bound uses). Only the pulses that matter are drawn (below).
* **Fibre** (transmitter side; it hosts the eavesdropper): a pulse of intensity m delivers a
  detectable photon to Bob with probability ``1 - exp(-eta m)``, ``eta`` the transmittance
  *including Bob's detector efficiency* (the standard conservative attribution of detector
  inefficiency to channel loss, which Eve could in principle control). Eve intercepts a fraction
  ``eve_fraction`` of pulses, measures every non-empty one in a random basis and resends one photon
  in the state she found through a gain-preserving channel (``physics.eve_transmittance``).
  Sampling is exact thinning: candidate pulses form a Bernoulli process with the largest delivery
  probability ``p_max`` (geometric gaps, so the cost is per candidate, not per pulse); the source
  draws the states of exactly the candidates; each candidate is delivered with probability
  ``p(state, intercepted) / p_max``.
* **Detector** (receiver): dark counts are a Bernoulli(Y0) process over all pulses (a photon wins
  when both happen); Bob's basis comes from his own RandomSource; a photon measured in its own
  basis gives its bit flipped with probability ``e_d`` (misalignment), otherwise a random bit, as
  does a dark count.

The photon records (:class:`Photons`: position in the frame and the photon's basis and bit) are
what crosses the channel, one record per delivered photon; :func:`encode_frame` /
:func:`decode_frame` are their strict wire form between the two module processes.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numba import njit

from keyserver.qkd.physics import (
    LinkParams,
    eve_transmittance,
    quantised_probabilities,
    transmittance,
)
from keyserver.qkd.randomness import RandomSource

U8Array = npt.NDArray[np.uint8]
U32Array = npt.NDArray[np.uint32]
U64Array = npt.NDArray[np.uint64]

BASIS_Z = 0
BASIS_X = 1
_P16 = 1 << 16
_P15 = 1 << 15


def _thresholds(params: LinkParams) -> tuple[int, int, int]:
    """The source's grid: intensity mu below t0, nu below t1 (16 bits); Z below tz (15 bits)."""
    t0 = round(params.p_signal * _P16)
    t1 = round((params.p_signal + params.p_decoy) * _P16)
    tz = round(params.p_z * _P15)
    return t0, t1, tz


def decode_states(words: U32Array, params: LinkParams) -> U8Array:
    """Alice's pulse states from 32-bit random words: ``intensity << 2 | basis << 1 | bit``."""
    t0, t1, tz = _thresholds(params)
    low = words & np.uint32(0xFFFF)
    intensity: U8Array = ((low >= t0).astype(np.uint8) + (low >= t1).astype(np.uint8)).astype(
        np.uint8
    )
    basis = (((words >> np.uint32(16)) & np.uint32(0x7FFF)) >= tz).astype(np.uint8)
    bit = (words >> np.uint32(31)).astype(np.uint8)
    out: U8Array = ((intensity << 2) | (basis << 1) | bit).astype(np.uint8)
    return out


def bernoulli_positions(rng: np.random.Generator, pulses: int, p: float) -> U32Array:
    """Sorted positions in ``[0, pulses)`` of a Bernoulli(p) process.

    The gaps are geometric, drawn exactly as ``1 + floor(E / -ln(1 - p))`` with E standard
    exponential (numpy's ziggurat sampler, a few ns each), summed in one pass."""
    if p <= 0.0 or pulses <= 0:
        return np.zeros(0, dtype=np.uint32)
    if p >= 1.0:
        return np.arange(pulses, dtype=np.uint32)
    rate = -math.log1p(-p)
    chunks: list[U32Array] = []
    last = -1
    while True:
        expect = (pulses - 1 - last) * p
        size = int(expect + 6.0 * math.sqrt(expect + 1.0) + 16)
        pos, last, done = _gap_positions(rng.standard_exponential(size), rate, last, pulses)
        chunks.append(pos)
        if done:
            break
    out: U32Array = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
    return out


@njit(cache=True, nogil=True)
def _gap_positions(
    exps: npt.NDArray[np.float64], rate: float, last: int, pulses: int
) -> tuple[U32Array, int, bool]:
    """Positions after ``last`` with gaps ``1 + floor(E / rate)``, below ``pulses``; whether the
    exponentials sufficed to pass the end."""
    out = np.empty(exps.shape[0], dtype=np.uint32)
    pos = np.int64(last)
    for i in range(exps.shape[0]):
        nxt = pos + np.int64(exps[i] / rate) + 1
        if nxt >= pulses:
            return out[:i], int(pos), True
        pos = nxt
        out[i] = pos
    return out, int(pos), False


@njit(cache=True, nogil=True)
def _source_and_fibre(
    rng: np.random.Generator,
    cand: U32Array,
    words: U32Array,
    t0: int,
    t1: int,
    tz: int,
    clean: npt.NDArray[np.float64],
    eve: npt.NDArray[np.float64],
    p_eve: float,
    p_max: float,
) -> tuple[U8Array, U32Array, U8Array]:
    """Alice's states of the candidates (as :func:`decode_states`), and the photons the fibre
    delivers: their positions and basis << 1 | bit (Eve included). A candidate whose delivery
    probability is ``p_max`` itself is delivered without a draw (thinning by 1)."""
    n = cand.shape[0]
    states = np.empty(n, dtype=np.uint8)
    ph_pos = np.empty(n, dtype=np.uint32)
    ph = np.empty(n, dtype=np.uint8)
    sure = np.empty(3, dtype=np.bool_)
    for k in range(3):
        sure[k] = clean[k] >= p_max
    c = 0
    for i in range(n):
        w = np.int64(words[i])
        low = w & 0xFFFF
        k = (1 if low >= t0 else 0) + (1 if low >= t1 else 0)
        basis = 1 if ((w >> 16) & 0x7FFF) >= tz else 0
        bit = w >> 31
        st = (k << 2) | (basis << 1) | bit
        states[i] = st
        if p_eve > 0.0 and rng.random() < p_eve:
            if rng.random() * p_max < eve[k]:
                eve_basis = 1 if rng.random() < 0.5 else 0
                eve_bit = bit if eve_basis == basis else (1 if rng.random() < 0.5 else 0)
                ph_pos[c] = cand[i]
                ph[c] = (eve_basis << 1) | eve_bit
                c += 1
        elif sure[k] or rng.random() * p_max < clean[k]:
            ph_pos[c] = cand[i]
            ph[c] = (basis << 1) | bit
            c += 1
    return states, ph_pos[:c], ph[:c]


@njit(cache=True, nogil=True)
def _detect(
    rng: np.random.Generator,
    ph_pos: U32Array,
    ph_states: U8Array,
    dark: U32Array,
    words: U32Array,
    z_threshold: np.uint64,
    misalignment: float,
) -> tuple[U32Array, U8Array, U8Array]:
    """Bob's clicks: the sorted union of photon and dark-count positions (a photon wins where
    both happen); his bases (Z when his word is below the threshold: as
    ``RandomSource.bernoulli``) and his bits: a photon measured in its basis gives its bit
    (flipped with probability e_d), anything else (other basis, dark count alone) a random bit."""
    n = words.shape[0]
    pos = np.empty(n, dtype=np.uint32)
    bases = np.empty(n, dtype=np.uint8)
    bits = np.empty(n, dtype=np.uint8)
    i = 0
    j = 0
    k = 0
    n_ph = ph_pos.shape[0]
    n_dark = dark.shape[0]
    while (i < n_ph or j < n_dark) and k < n:
        if j >= n_dark or (i < n_ph and ph_pos[i] <= dark[j]):
            if j < n_dark and ph_pos[i] == dark[j]:
                j += 1
            w = i
            p = ph_pos[i]
            i += 1
        else:
            w = -1
            p = dark[j]
            j += 1
        basis = 0 if np.uint64(words[k]) < z_threshold else 1
        pos[k] = p
        bases[k] = basis
        if w >= 0 and (ph_states[w] >> 1) == basis:
            b = ph_states[w] & 1
            if rng.random() < misalignment:
                b ^= 1
            bits[k] = b
        else:
            bits[k] = 1 if rng.random() < 0.5 else 0
        k += 1
    return pos[:k], bases[:k], bits[:k]


@dataclass(frozen=True)
class Photons:
    """What the fibre delivers to Bob's detector in one frame (one record per photon)."""

    positions: U32Array  # sorted pulse positions within the frame
    states: U8Array  # basis << 1 | bit of the photon as it arrives


@dataclass(frozen=True)
class SourceRecord:
    """Alice's record of one frame: the states of the candidate pulses (sorted positions)."""

    positions: U32Array | U64Array  # within the frame (u32) or, at Alice, the block (u64)
    states: U8Array  # intensity << 2 | basis << 1 | bit


class Fibre:
    """The simulated fibre with its eavesdropper (runs at the transmitter)."""

    def __init__(self, params: LinkParams, rng: np.random.Generator) -> None:
        self.params = params
        self._rng = rng
        self.eve_fraction = params.eve_fraction

    def _delivery(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        eta = transmittance(self.params)
        eta_e = eve_transmittance(self.params)
        mus = np.array(self.params.intensities, dtype=np.float64)
        clean = -np.expm1(-eta * mus)
        eve = -np.expm1(-mus) * eta_e
        return clean, eve

    def transmit(self, pulses: int, source: RandomSource) -> tuple[SourceRecord, Photons]:
        """Send one frame of ``pulses`` pulses; Alice's record and the photons Bob receives."""
        rng = self._rng
        clean, eve = self._delivery()
        p_eve = self.eve_fraction
        p_max = float(max(clean.max(), eve.max() if p_eve > 0 else 0.0))
        cand = bernoulli_positions(rng, pulses, p_max)
        t0, t1, tz = _thresholds(self.params)
        states, positions, photon = _source_and_fibre(
            rng, cand, source.uint32(cand.shape[0]), t0, t1, tz, clean, eve, p_eve, p_max
        )
        return SourceRecord(cand, states), Photons(positions, photon)


@dataclass(frozen=True)
class Detections:
    """Bob's clicks in one frame: positions (within the frame), his basis, his bit."""

    positions: U32Array
    bases: U8Array
    bits: U8Array


class Detector:
    """Bob's detector: dark counts, his basis choice, misalignment (runs at the receiver)."""

    def __init__(self, params: LinkParams, rng: np.random.Generator) -> None:
        self.params = params
        self._rng = rng

    def detect(self, photons: Photons, pulses: int, bob: RandomSource) -> Detections:
        rng = self._rng
        dark = bernoulli_positions(rng, pulses, self.params.dark_count)
        ph = photons.positions
        both = 0
        if dark.shape[0] and ph.shape[0]:
            at = np.minimum(np.searchsorted(ph, dark), ph.shape[0] - 1)
            both = int(np.count_nonzero(ph[at] == dark))
        n = ph.shape[0] + dark.shape[0] - both  # clicks: photons and dark counts, once each
        _, p_z = quantised_probabilities(self.params)
        threshold = np.uint64(round(min(max(p_z, 0.0), 1.0) * 2**32))  # RandomSource.bernoulli
        positions, bases, bits = _detect(
            rng, ph, photons.states, dark, bob.uint32(n), threshold, self.params.misalignment
        )  # bases: 1 = X
        return Detections(positions, bases, bits)


# -- wire form of one frame on the quantum channel ---------------------------------------------

FRAME_MAGIC = b"QCF1"
_FRAME_HEAD = struct.Struct("!4sQIIIB")  # magic, block, frame, pulses, photons, last
MAX_FRAME_PHOTONS = 1 << 26


@dataclass(frozen=True)
class QuantumFrame:
    block: int
    frame: int
    pulses: int
    last: bool
    photons: Photons


class QuantumChannelError(ValueError):
    """A malformed quantum-channel frame."""


def encode_frame(frame: QuantumFrame, *, length_prefix: bool = False) -> bytearray:
    """Wire form: header, the photons' u32 positions, their states (one byte each); built in
    one buffer (``length_prefix``: with the u32 big-endian length in front, as the stream
    carries it)."""
    p = frame.photons
    count = p.positions.shape[0]
    lead = 4 if length_prefix else 0
    size = _FRAME_HEAD.size + 5 * count
    out = bytearray(lead + size)
    if length_prefix:
        struct.pack_into(">I", out, 0, size)
    _FRAME_HEAD.pack_into(
        out, lead, FRAME_MAGIC, frame.block, frame.frame, frame.pulses, count, int(frame.last)
    )
    body = lead + _FRAME_HEAD.size
    np.frombuffer(out, dtype="<u4", count=count, offset=body)[:] = p.positions
    np.frombuffer(out, dtype=np.uint8, count=count, offset=body + 4 * count)[:] = p.states
    return out


def frame_header_size() -> int:
    return _FRAME_HEAD.size


def frame_body_size(header: bytes) -> int:
    """Bytes of photon data that follow ``header`` (validated)."""
    magic, _, _, pulses, count, last = _FRAME_HEAD.unpack(header)
    if magic != FRAME_MAGIC or last not in (0, 1):
        raise QuantumChannelError("not a quantum-channel frame")
    if count > min(pulses, MAX_FRAME_PHOTONS):
        raise QuantumChannelError("frame has more photons than pulses or than the limit")
    return int(count) * 5


@njit(cache=True, nogil=True)
def _valid_photons(positions: U32Array, states: U8Array, pulses: int) -> bool:
    """Positions strictly increasing and inside the frame, states basis << 1 | bit."""
    prev = -1
    for i in range(positions.shape[0]):
        q = int(positions[i])
        if q <= prev or states[i] > 3:
            return False
        prev = q
    return prev < pulses


def decode_frame(data: bytes | bytearray) -> QuantumFrame:
    """Strict parse; the photon arrays are read-only views into ``data`` (no copies)."""
    if len(data) < _FRAME_HEAD.size:
        raise QuantumChannelError("short quantum-channel frame")
    _, block, frame, pulses, count, last = _FRAME_HEAD.unpack_from(data)
    body = frame_body_size(bytes(data[: _FRAME_HEAD.size]))
    if len(data) != _FRAME_HEAD.size + body:
        raise QuantumChannelError("quantum-channel frame length does not match its header")
    off = _FRAME_HEAD.size
    positions = np.frombuffer(data, dtype="<u4", count=count, offset=off)
    states = np.frombuffer(data, dtype=np.uint8, count=count, offset=off + 4 * count)
    if not _valid_photons(positions, states, pulses):
        raise QuantumChannelError(
            "photon positions must be increasing and inside the frame, states within 0..3"
        )
    return QuantumFrame(block, frame, pulses, bool(last), Photons(positions, states))
