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

from keyserver.qkd.physics import LinkParams, eve_transmittance, transmittance
from keyserver.qkd.randomness import RandomSource

U8Array = npt.NDArray[np.uint8]
U32Array = npt.NDArray[np.uint32]
U64Array = npt.NDArray[np.uint64]

BASIS_Z = 0
BASIS_X = 1
_P16 = 1 << 16
_P15 = 1 << 15


def quantised_probabilities(params: LinkParams) -> tuple[tuple[float, float, float], float]:
    """((p_mu, p_nu, p_vacuum), p_z) exactly as the source realises them (2^-16, 2^-15 grid)."""
    t0 = round(params.p_signal * _P16)
    t1 = round((params.p_signal + params.p_decoy) * _P16)
    tz = round(params.p_z * _P15)
    return ((t0 / _P16, (t1 - t0) / _P16, (_P16 - t1) / _P16), tz / _P15)


def decode_states(words: U32Array, params: LinkParams) -> U8Array:
    """Alice's pulse states from 32-bit random words: ``intensity << 2 | basis << 1 | bit``."""
    t0 = round(params.p_signal * _P16)
    t1 = round((params.p_signal + params.p_decoy) * _P16)
    tz = round(params.p_z * _P15)
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
    exponential (numpy's ziggurat sampler, a few ns each)."""
    if p <= 0.0 or pulses <= 0:
        return np.zeros(0, dtype=np.uint32)
    if p >= 1.0:
        return np.arange(pulses, dtype=np.uint32)
    rate = -math.log1p(-p)
    chunks: list[npt.NDArray[np.int64]] = []
    last = -1
    while True:
        expect = (pulses - 1 - last) * p
        size = int(expect + 6.0 * math.sqrt(expect + 1.0) + 16)
        gaps = (rng.standard_exponential(size) / rate).astype(np.int64) + 1
        pos = last + np.cumsum(gaps)
        if pos[-1] >= pulses:
            chunks.append(pos[: np.searchsorted(pos, pulses)])
            break
        chunks.append(pos)
        last = int(pos[-1])
    out: U32Array = np.concatenate(chunks).astype(np.uint32)
    return out


@njit(cache=True, nogil=True)
def _deliver(
    rng: np.random.Generator,
    states: U8Array,
    clean: npt.NDArray[np.float64],
    eve: npt.NDArray[np.float64],
    p_eve: float,
    p_max: float,
) -> tuple[npt.NDArray[np.bool_], U8Array]:
    """Which candidates deliver a photon, and the photon's basis << 1 | bit (Eve included)."""
    n = states.shape[0]
    delivered = np.zeros(n, dtype=np.bool_)
    photon = np.zeros(n, dtype=np.uint8)
    for i in range(n):
        st = states[i]
        k = st >> 2
        basis = (st >> 1) & 1
        bit = st & 1
        if p_eve > 0.0 and rng.random() < p_eve:
            if rng.random() * p_max < eve[k]:
                delivered[i] = True
                eve_basis = np.uint8(1) if rng.random() < 0.5 else np.uint8(0)
                eve_bit = bit if eve_basis == basis else (
                    np.uint8(1) if rng.random() < 0.5 else np.uint8(0))
                photon[i] = (eve_basis << 1) | eve_bit
        elif rng.random() * p_max < clean[k]:
            delivered[i] = True
            photon[i] = (basis << 1) | bit
    return delivered, photon


@njit(cache=True, nogil=True)
def _measure(
    rng: np.random.Generator,
    which: npt.NDArray[np.int64],
    photon_states: U8Array,
    bases: U8Array,
    misalignment: float,
) -> U8Array:
    n = which.shape[0]
    bits = np.empty(n, dtype=np.uint8)
    for i in range(n):
        w = which[i]
        if w >= 0 and (photon_states[w] >> 1) == bases[i]:
            b = photon_states[w] & 1
            if rng.random() < misalignment:
                b ^= 1
            bits[i] = b
        else:
            bits[i] = 1 if rng.random() < 0.5 else 0
    return bits


@njit(cache=True, nogil=True)
def merge_union(photons: U32Array, dark: U32Array) -> tuple[U32Array, npt.NDArray[np.int64]]:
    """Sorted union of two sorted position arrays, and for each position the index of the
    photon there (-1 for a dark count alone)."""
    out = np.empty(photons.shape[0] + dark.shape[0], dtype=np.uint32)
    which = np.empty(photons.shape[0] + dark.shape[0], dtype=np.int64)
    i = 0
    j = 0
    k = 0
    while i < photons.shape[0] or j < dark.shape[0]:
        if j >= dark.shape[0] or (i < photons.shape[0] and photons[i] <= dark[j]):
            if j < dark.shape[0] and photons[i] == dark[j]:
                j += 1
            out[k] = photons[i]
            which[k] = i
            i += 1
        else:
            out[k] = dark[j]
            which[k] = -1
            j += 1
        k += 1
    return out[:k], which[:k]


@njit(cache=True, nogil=True)
def match_sorted(table: U64Array, queries: U64Array) -> npt.NDArray[np.int64]:
    """For sorted ``queries``, the index of each in sorted ``table``, or -1."""
    out = np.full(queries.shape[0], -1, dtype=np.int64)
    i = 0
    for k in range(queries.shape[0]):
        q = queries[k]
        while i < table.shape[0] and table[i] < q:
            i += 1
        if i < table.shape[0] and table[i] == q:
            out[k] = i
    return out


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
        states = decode_states(source.uint32(cand.shape[0]), self.params)
        delivered, photon = _deliver(rng, states, clean, eve, p_eve, p_max)
        return SourceRecord(cand, states), Photons(cand[delivered], photon[delivered])


@dataclass(frozen=True)
class Detections:
    """Bob's clicks in one frame or block: positions, his basis, his bit."""

    positions: U64Array
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
        positions, which = merge_union(photons.positions, dark)
        n = positions.shape[0]
        _, p_z = quantised_probabilities(self.params)
        bases = (1 - bob.bernoulli(n, p_z)).astype(np.uint8)  # 1 = X
        bits = _measure(rng, which, photons.states, bases, self.params.misalignment)
        return Detections(positions.astype(np.uint64), bases, bits)


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


def encode_frame(frame: QuantumFrame) -> bytes:
    p = frame.photons
    head = _FRAME_HEAD.pack(
        FRAME_MAGIC, frame.block, frame.frame, frame.pulses, p.positions.shape[0], int(frame.last)
    )
    return head + p.positions.astype("<u4").tobytes() + p.states.astype(np.uint8).tobytes()


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


def decode_frame(data: bytes) -> QuantumFrame:
    if len(data) < _FRAME_HEAD.size:
        raise QuantumChannelError("short quantum-channel frame")
    _, block, frame, pulses, count, last = _FRAME_HEAD.unpack_from(data)
    body = frame_body_size(data[: _FRAME_HEAD.size])
    if len(data) != _FRAME_HEAD.size + body:
        raise QuantumChannelError("quantum-channel frame length does not match its header")
    off = _FRAME_HEAD.size
    positions = np.frombuffer(data, dtype="<u4", count=count, offset=off).astype(np.uint32)
    states = np.frombuffer(data, dtype=np.uint8, count=count, offset=off + 4 * count).copy()
    if count and (np.any(np.diff(positions.astype(np.int64)) <= 0) or positions[-1] >= pulses):
        raise QuantumChannelError("photon positions must be increasing and inside the frame")
    if np.any(states > 3):
        raise QuantumChannelError("photon state out of range")
    return QuantumFrame(block, frame, pulses, bool(last), Photons(positions, states))
