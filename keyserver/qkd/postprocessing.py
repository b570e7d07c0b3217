"""The post-processing protocol as two sans-I/O state machines (transmitter Alice, receiver Bob).

Inputs are quantum-channel frames (Alice's source record, Bob's detections), decoded classical
messages, and "stored" notices from the module once it has made a block durable; outputs are
messages to send and events. No I/O, no clocks: the module process (:mod:`keyserver.qkd.module`)
and the in-process simulation (:mod:`keyserver.qkd.simulate`) drive the very same machines.

One block (all messages carry its number; several blocks may be in flight):

1. ``Detections`` (B->A, per batch of frames): positions of Bob's clicks and his bases.
   ``Sifting`` (A->B): Alice's bases, the intensity of each basis-matched click, and her bits of
   the matched X clicks (the test basis: disclosed and discarded). Both now hold the key-basis
   (Z) strings and the counts per intensity.
2. ``Estimate`` (B->A): the X errors per intensity, and the public seed of the Cascade
   permutations. Both compute the same abort decision: the signal X error rate above
   ``qber_abort``, or no key in the finite-key bound even with the planned leakage.
3. Cascade (``ParityRequest`` B->A, ``ParityAnswer`` A->B) over groups of ``GROUP_BITS`` bits, the
   block sizes from the previous block's exact QBER. ``Reconciled`` (B->A): errors corrected and
   parities received, which must equal the parities Alice sent.
4. ``Verify`` (A->B): Poly1305 key and tag of Alice's string, the finite-key length ``l``, the
   authentication refill, the privacy-amplification seed. Bob checks the tag and ``l``,
   hashes, and the module stores the block (``StoreBlock``), then ``Confirm`` (B->A).
5. Alice stores (``StoreBlock``), then ``Commit`` (A->B). Bob's keys of a block become
   deliverable when it is committed; after a reconnect ``Hello.last_committed_block`` settles
   blocks whose ``Commit`` was lost.
"""

from __future__ import annotations

import enum
import math
import uuid
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from numba import njit

from keyserver.qkd import messages as m
from keyserver.qkd.blocks import (
    AUTH_FLOOR_BYTES,
    KEY_NAMESPACE,
    PROTOCOL_FIELDS,
    BlockStats,
    abort_decision,
    adopt_protocol,
    block_secret_length,
    key_id,
    protocol_json,
    refill_bits,
    split_key,
)
from keyserver.qkd.cascade import CascadeAlice, CascadeBob, CascadeError, schedule
from keyserver.qkd.cascade import ParityRequest as CascadeRequest
from keyserver.qkd.finitekey import BasisCounts, FiniteKey, asymptotic_rate
from keyserver.qkd.messages import AbortReason
from keyserver.qkd.physics import LinkParams, binary_entropy
from keyserver.qkd.privacyamplification import (
    HASH_KEY_BYTES,
    TAG_BITS,
    amplify,
    seed_bytes,
    tags_equal,
    verification_tag,
)
from keyserver.qkd.quantumchannel import (
    Detections,
    SourceRecord,
    decode_states,
)
from keyserver.qkd.randomness import RandomSource

U8Array = npt.NDArray[np.uint8]
U32Array = npt.NDArray[np.uint32]
U64Array = npt.NDArray[np.uint64]

__all__ = [
    "AUTH_FLOOR_BYTES",
    "KEY_NAMESPACE",
    "PROTOCOL_FIELDS",
    "BlockStats",
    "abort_decision",
    "adopt_protocol",
    "block_secret_length",
    "key_id",
    "protocol_json",
    "split_key",
]

GROUP_BITS = 1 << 22  # Cascade runs on groups of at most this many bits, one after the other
BATCH_DETECTIONS = 1 << 20  # Bob sends his detections when a batch holds this many
BATCH_PULSES = 1_000_000_000  # ... or covers this many pulses
# -- outputs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    message: m.Message


@dataclass(frozen=True)
class StoreBlock:
    """Make this block's keys and refill durable, then call ``stored(block)``."""

    block: int
    keys: list[tuple[uuid.UUID, bytes]]
    refill_to_receiver: bytes
    refill_to_transmitter: bytes
    stats: BlockStats


@dataclass(frozen=True)
class BlockAborted:
    block: int
    reason: AbortReason
    stats: BlockStats


@dataclass(frozen=True)
class BlockCommitted:
    """Both sides hold the block: its keys may be delivered (and the refill used)."""

    block: int
    stats: BlockStats | None


Output = Send | StoreBlock | BlockAborted | BlockCommitted


class ProtocolError(ValueError):
    """A message that does not fit the protocol state."""


def _pack(bits: U8Array) -> bytes:
    return np.packbits(bits.astype(np.uint8)).tobytes()


def _unpack(data: bytes, count: int, what: str) -> U8Array:
    if len(data) != (count + 7) // 8:
        raise ProtocolError(f"{what}: {len(data)} bytes for {count} bits")
    out: U8Array = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[:count]
    return out


@njit(cache=True, nogil=True)
def _bit(packed: U8Array, i: int) -> int:
    """Bit i of a string packed as by ``np.packbits`` (first bit in the high bit)."""
    return int((np.int64(packed[i >> 3]) >> (7 - (i & 7))) & 1)


@njit(cache=True, nogil=True)
def _positions_from_gaps(
    first: int, gaps: npt.NDArray[np.uint32], pulses: int
) -> tuple[U64Array, int]:
    """Positions ``first, first + g0, ...``; status 1 if a gap is 0, 2 if one is beyond the
    pulses sent."""
    n = gaps.shape[0] + 1
    out = np.empty(n, dtype=np.uint64)
    pos = np.uint64(first)
    out[0] = pos
    for i in range(n - 1):
        g = gaps[i]
        if g == 0:
            return out, 1
        pos += np.uint64(g)
        out[i + 1] = pos
    if first >= pulses or pos >= np.uint64(pulses):
        return out, 2
    return out, 0


@njit(cache=True, nogil=True)
def _lookup_states(
    cand: U32Array | U64Array,
    cand_states: U8Array,
    offset: np.uint64,
    positions: U64Array,
    lo: int,
    hi: int,
    states: U8Array,
    have: npt.NDArray[np.bool_],
) -> None:
    """Alice's states at ``positions[lo:hi]`` (all in one frame) from its candidate record
    (sorted positions within the frame): a merge of the two sorted lists."""
    i = 0
    m = cand.shape[0]
    for k in range(lo, hi):
        q = positions[k] - offset
        while i < m and np.uint64(cand[i]) < q:
            i += 1
        if i < m and np.uint64(cand[i]) == q:
            states[k] = cand_states[i]
            have[k] = True


@njit(cache=True, nogil=True)
def _sift_alice(
    states: U8Array, bob_packed: U8Array
) -> tuple[U8Array, U8Array, U8Array, U8Array, npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Alice's bases (packed), the intensities of matched clicks, her Z bits, her X bits (packed),
    counts per intensity; Bob's bases arrive packed (1 = X). Branch-free where it can be."""
    n = states.shape[0]
    nbytes = (n + 7) // 8
    bases = np.zeros(nbytes, dtype=np.uint8)
    intens = np.empty(n, dtype=np.uint8)
    zb = np.empty(n, dtype=np.uint8)
    xb = np.zeros(nbytes, dtype=np.uint8)
    counts = np.zeros(6, dtype=np.int64)  # matched Z per intensity, then matched X
    m = 0
    cz = 0
    cx = 0
    x_acc = 0
    for byte in range(nbytes):
        bob = int(bob_packed[byte])
        acc = 0
        for t in range(8):
            i = byte * 8 + t
            if i >= n:
                break
            st = int(states[i])
            basis = (st >> 1) & 1
            acc |= basis << (7 - t)
            match = 1 if basis == ((bob >> (7 - t)) & 1) else 0
            k = st >> 2
            intens[m] = k
            m += match
            zb[cz] = st & 1
            cz += match & (basis ^ 1)
            counts[k + 3 * basis] += match
            if match & basis:
                x_acc |= (st & 1) << (7 - (cx & 7))
                cx += 1
                if cx & 7 == 0:
                    xb[(cx >> 3) - 1] = x_acc
                    x_acc = 0
        bases[byte] = acc
    if cx & 7:
        xb[cx >> 3] = x_acc
    return bases, intens[:m], zb[:cz], xb[: (cx + 7) // 8], counts[:3].copy(), counts[3:].copy()


@njit(cache=True, nogil=True)
def _sift_bob(
    alice_packed: U8Array,
    bob_bases: U8Array,
    bob_bits: U8Array,
    intens: U8Array,
    alice_x: U8Array,
) -> tuple[U8Array, npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64], int]:
    """Bob's Z bits and per-intensity counts (Z, X, X errors); -1 as last value if malformed
    (the matched count, an intensity, or the X bits do not fit). Alice's bases and X bits arrive
    packed."""
    n = bob_bases.shape[0]
    zb = np.empty(n, dtype=np.uint8)
    nz = np.zeros(3, dtype=np.int64)
    nx = np.zeros(3, dtype=np.int64)
    mx = np.zeros(3, dtype=np.int64)
    matched = 0
    matched_x = 0
    for i in range(n):
        ok = 1 if _bit(alice_packed, i) == bob_bases[i] else 0
        matched += ok
        matched_x += ok & bob_bases[i]
    if matched != intens.shape[0] or (matched_x + 7) // 8 != alice_x.shape[0]:
        return zb[:0], nz, nx, mx, -1
    for j in range(intens.shape[0]):
        if intens[j] > 2:
            return zb[:0], nz, nx, mx, -1
    counts = np.zeros(9, dtype=np.int64)  # Z, X, X errors per intensity
    lookup = np.zeros(matched + 1, dtype=np.int64)  # one spare entry: reads past the last match
    lookup[:matched] = intens
    x_pad = np.zeros(alice_x.shape[0] + 1, dtype=np.uint8)
    x_pad[: alice_x.shape[0]] = alice_x
    m = 0
    cz = 0
    cx = 0
    for i in range(n):  # branch-free: every click is processed, counted only if matched
        basis = int(bob_bases[i])
        ok = 1 if _bit(alice_packed, i) == basis else 0
        k = int(lookup[m])
        bit = int(bob_bits[i])
        zb[cz] = bit
        cz += ok & (basis ^ 1)
        counts[k + 3 * basis] += ok
        counts[6 + k] += ok & basis & (_bit(x_pad, cx) ^ bit)
        cx += ok & basis
        m += ok
    for k in range(3):
        nz[k] = counts[k]
        nx[k] = counts[3 + k]
        mx[k] = counts[6 + k]
    return zb[:cz], nz, nx, mx, 0


# -- per-block state -----------------------------------------------------------------------------


class BlockState(enum.Enum):
    """Where a block stands in post-processing (each party's machine holds its own)."""

    SIFTING = enum.auto()  # frames and sifting batches arrive
    ESTIMATE = enum.auto()  # Alice: sifting done, the parameter estimate is due
    CASCADE = enum.auto()  # error correction runs
    VERIFY = enum.auto()  # Alice: the verification hash is out, Bob's answer is due
    STORING = enum.auto()  # the key is out to the store: the block is past discarding


@dataclass
class _Block:
    number: int
    stats: BlockStats
    z_bits: list[U8Array] = field(default_factory=list)
    n_z: list[int] = field(default_factory=lambda: [0, 0, 0])
    n_x: list[int] = field(default_factory=lambda: [0, 0, 0])
    m_x: list[int] = field(default_factory=lambda: [0, 0, 0])
    batches: int = 0
    sifting_done: bool = False
    key_string: U8Array | None = None
    group: int = -1
    cascade_seed: bytes = b""
    leak: int = 0
    errors: int = 0
    final_key: bytes = b""
    split: tuple[list[tuple[uuid.UUID, bytes]], bytes, bytes] | None = None
    state: BlockState = BlockState.SIFTING

    def counts(self) -> BasisCounts:
        return BasisCounts(
            tuple(float(v) for v in self.n_z),  # type: ignore[arg-type]
            tuple(float(v) for v in self.n_x),  # type: ignore[arg-type]
            tuple(float(v) for v in self.m_x),  # type: ignore[arg-type]
        )

    def freeze_counts(self) -> None:
        self.stats.n_z = (self.n_z[0], self.n_z[1], self.n_z[2])
        self.stats.n_x = (self.n_x[0], self.n_x[1], self.n_x[2])
        self.stats.m_x = (self.m_x[0], self.m_x[1], self.m_x[2])
        self.stats.qber_x = self.m_x[0] / self.n_x[0] if self.n_x[0] else 0.0


class _Party:
    def __init__(self, params: LinkParams, link: str, key_size: int) -> None:
        self.params = params
        self.link = link
        self.key_size = key_size
        self.previous_qber: float | None = None
        self._blocks: dict[int, _Block] = {}

    def _expected_qber(self, b: _Block) -> float:
        if self.previous_qber is not None:
            return self.previous_qber
        return b.m_x[0] / b.n_x[0] if b.n_x[0] else 0.05

    def _get(self, block: int) -> _Block:
        b = self._blocks.get(block)
        if b is None:
            raise ProtocolError(f"no block {block} in progress")
        return b

    def _abort(self, b: _Block, reason: AbortReason) -> BlockAborted:
        self._blocks.pop(b.number, None)
        b.stats.aborted = True
        b.stats.reason = reason
        b.stats.secret_bits = 0
        return BlockAborted(b.number, reason, b.stats)

    def reset(self) -> list[Output]:
        """The connection was lost: every block not yet stored is discarded."""
        out: list[Output] = []
        for b in list(self._blocks.values()):
            if b.state is not BlockState.STORING:
                out.append(self._abort(b, AbortReason.CONNECTION_LOST))
        return out

    def blocks_in_progress(self) -> list[int]:
        return sorted(self._blocks)

    def _finish_stats(self, b: _Block, key: FiniteKey, refill_bits: int, keys: int) -> None:
        s = b.stats
        s.secret_bits = key.length
        s.phase_error = key.phase_error
        s.s_z0, s.s_z1 = key.s_z0, key.s_z1
        s.auth_refill_bits = refill_bits
        s.key_bits_delivered = keys * self.key_size
        n = s.sifted_bits
        h = binary_entropy(s.qber)
        s.ec_efficiency = s.cascade_leak / (n * h) if n and h > 0 else 0.0


class Alice(_Party):
    """The transmitter's post-processing."""

    def __init__(self, params: LinkParams, link: str, key_size: int, random: RandomSource) -> None:
        super().__init__(params, link, key_size)
        self._random = random
        self._sources: dict[int, RandomSource] = {}
        self._fresh: dict[int, RandomSource] = {}
        # (frame, offset, pulses, record with positions within the frame)
        self._records: dict[int, list[tuple[int, int, int, SourceRecord]]] = {}
        self._cascade: dict[int, CascadeAlice] = {}
        self.auth_available = (0, 0)  # bytes left per direction (set by the module)
        self.auth_used_per_block = 0

    def reset(self) -> list[Output]:
        out = super().reset()
        for d in (self._sources, self._fresh, self._records, self._cascade):
            d.clear()
        return out

    def source_for(self, block: int) -> RandomSource:
        """Alice's random stream of a block (created fresh for each block)."""
        src = self._sources.get(block)
        if src is None:
            src = self._random.child(b"block%d" % block)
            self._sources[block] = src
            self._fresh[block] = self._random.child(b"fresh%d" % block)
            self._blocks[block] = _Block(block, BlockStats(block))
            self._records[block] = []
        return src

    def on_frame(
        self, block: int, frame: int, offset: int, pulses: int, record: SourceRecord
    ) -> None:
        """Alice's record of a frame she sent (``offset`` = its first pulse in the block)."""
        self.source_for(block)
        b = self._blocks.get(block)
        if b is None:
            return
        b.stats.pulses += pulses
        self._records[block].append((frame, offset, pulses, record))

    def _states_at(self, block: int, positions: U64Array, frames_upto: int) -> U8Array:
        recs = self._records.get(block, [])
        states = np.zeros(positions.shape[0], dtype=np.uint8)
        have = np.zeros(positions.shape[0], dtype=np.bool_)
        for _, offset, pulses, rec in recs:
            lo, hi = np.searchsorted(positions, np.array((offset, offset + pulses), np.uint64))
            if lo < hi:
                _lookup_states(
                    rec.positions,
                    rec.states,
                    np.uint64(offset),
                    positions,
                    int(lo),
                    int(hi),
                    states,
                    have,
                )
        missing = int(have.shape[0] - np.count_nonzero(have))
        if missing:  # pulses that were no delivery candidates: their states are fresh draws
            states[~have] = decode_states(self._fresh[block].uint32(missing), self.params)
        self._records[block] = [r for r in recs if r[0] >= frames_upto]
        return states

    def receive(self, msg: m.Message) -> list[Output]:
        if isinstance(msg, m.Detections):
            return self._on_detections(msg)
        if isinstance(msg, m.Estimate):
            return self._on_estimate(msg)
        if isinstance(msg, m.ParityRequest):
            return self._on_parity_request(msg)
        if isinstance(msg, m.Reconciled):
            return self._on_reconciled(msg)
        if isinstance(msg, m.Confirm):
            return self._on_confirm(msg)
        if isinstance(msg, m.Abort):
            b = self._blocks.get(msg.block)
            if b is None:
                return []
            try:
                reason = AbortReason(msg.reason)
            except ValueError:
                reason = AbortReason.PROTOCOL_ERROR
            return [self._abort(b, reason)]
        raise ProtocolError(f"the transmitter does not expect {type(msg).__name__}")

    def _on_detections(self, msg: m.Detections) -> list[Output]:
        b = self._get(msg.block)
        if b.state is not BlockState.SIFTING or msg.batch != b.batches:
            raise ProtocolError("detections out of order")
        if msg.count < 1 or len(msg.gaps) != 4 * (msg.count - 1):
            raise ProtocolError("detection count does not match its gaps")
        if len(msg.bases) != (msg.count + 7) // 8:
            raise ProtocolError(f"Detections.bases: {len(msg.bases)} bytes for {msg.count} bits")
        positions, ok = _positions_from_gaps(
            msg.first_position, np.frombuffer(msg.gaps, dtype="<u4"), b.stats.pulses
        )
        if ok == 1:
            raise ProtocolError("detection positions must increase")
        if ok == 2:
            raise ProtocolError("detection at a pulse that was not sent")
        states = self._states_at(msg.block, positions, msg.frames_upto)
        alice_bases, intensity, z_bits, x_bits, nz, nx = _sift_alice(
            states, np.frombuffer(msg.bases, dtype=np.uint8)
        )
        b.z_bits.append(z_bits)
        for k in range(3):
            b.n_z[k] += int(nz[k])
            b.n_x[k] += int(nx[k])
        b.stats.detections += msg.count
        b.batches += 1
        reply = m.Sifting(
            msg.block, msg.batch, alice_bases.tobytes(), intensity.tobytes(), x_bits.tobytes()
        )
        if msg.last:
            b.sifting_done = True
            b.state = BlockState.ESTIMATE
            self._records.pop(msg.block, None)
            self._sources.pop(msg.block, None)
            self._fresh.pop(msg.block, None)
        return [Send(reply)]

    def _on_estimate(self, msg: m.Estimate) -> list[Output]:
        b = self._get(msg.block)
        if b.state is not BlockState.ESTIMATE:
            raise ProtocolError("estimate before the last detections")
        errs = (msg.x_errors_mu, msg.x_errors_nu, msg.x_errors_vacuum)
        if any(e > n for e, n in zip(errs, b.n_x, strict=True)) or len(msg.cascade_seed) != 32:
            raise ProtocolError("estimate does not fit the sifted counts")
        b.m_x = list(errs)
        b.freeze_counts()
        b.stats.qber = b.stats.qber_x
        b.key_string = np.concatenate(b.z_bits) if b.z_bits else np.zeros(0, np.uint8)
        b.z_bits = []
        b.cascade_seed = msg.cascade_seed
        reason = abort_decision(self.params, b.counts(), self._expected_qber(b))
        if reason is not None:
            return [self._abort(b, reason)]
        b.state = BlockState.CASCADE
        return []

    def _on_parity_request(self, msg: m.ParityRequest) -> list[Output]:
        b = self._get(msg.block)
        if b.state is not BlockState.CASCADE or b.key_string is None:
            raise ProtocolError("parity request outside error correction")
        n = b.key_string.shape[0]
        groups = max(1, math.ceil(n / GROUP_BITS))
        if msg.group == b.group + 1 and msg.group < groups:
            if b.group >= 0:
                b.leak += self._cascade[b.number].leaked_bits
            b.group = msg.group
            lo = msg.group * GROUP_BITS
            bits = b.key_string[lo : min(n, lo + GROUP_BITS)]
            self._cascade[b.number] = CascadeAlice(
                bits, b.cascade_seed + msg.group.to_bytes(4, "big"), bits.shape[0]
            )
        elif msg.group != b.group:
            raise ProtocolError("parity request for a group out of order")
        casc = self._cascade[b.number]
        try:
            if msg.start_block:
                if msg.passes or msg.lo or msg.hi:
                    raise ProtocolError("a pass start carries no ranges")
                parities = casc.start_pass(msg.start_block)
            else:
                count = len(msg.passes)
                if len(msg.lo) != 4 * count or len(msg.hi) != 4 * count or count == 0:
                    raise ProtocolError("parity request arrays differ in length")
                passes = np.frombuffer(msg.passes, dtype=np.uint8)
                lo_r = np.frombuffer(msg.lo, dtype="<u4").astype(np.int64)
                hi_r = np.frombuffer(msg.hi, dtype="<u4").astype(np.int64)
                parities = casc.answer(passes, lo_r, hi_r)
        except CascadeError:
            return [
                self._abort(b, AbortReason.RECONCILIATION_FAILED),
                Send(m.Abort(b.number, int(AbortReason.RECONCILIATION_FAILED))),
            ]
        return [
            Send(
                m.ParityAnswer(
                    b.number, msg.group, msg.round, int(parities.shape[0]), _pack(parities)
                )
            )
        ]

    def _on_reconciled(self, msg: m.Reconciled) -> list[Output]:
        b = self._get(msg.block)
        if b.state is not BlockState.CASCADE or b.key_string is None:
            raise ProtocolError("reconciled outside error correction")
        casc = self._cascade.pop(b.number, None)
        if casc is not None:
            b.leak += casc.leaked_bits
        n = b.key_string.shape[0]
        if msg.leaked_bits != b.leak or msg.errors > n:
            return [
                self._abort(b, AbortReason.PROTOCOL_ERROR),
                Send(m.Abort(b.number, int(AbortReason.PROTOCOL_ERROR))),
            ]
        b.errors = msg.errors
        b.stats.qber = msg.errors / n if n else 0.0
        b.stats.cascade_leak = b.leak
        b.stats.verification_leak = TAG_BITS
        key = block_secret_length(self.params, b.counts(), b.leak + TAG_BITS)
        if key.length < 8:
            out: list[Output] = [self._abort(b, AbortReason.NO_SECRET_KEY)]
            return [*out, Send(m.Abort(b.number, int(AbortReason.NO_SECRET_KEY)))]
        refill = self._refill_bits(key.length)
        hash_key = self._random.bytes(HASH_KEY_BYTES)
        tag = verification_tag(b.key_string, hash_key)
        pa_seed = self._random.bytes(seed_bytes(n, key.length))
        b.final_key = amplify(b.key_string, pa_seed, key.length)
        b.split = split_key(self.link, b.number, b.final_key, key.length, refill, self.key_size)
        self._finish_stats(b, key, refill, len(b.split[0]))
        b.key_string = None
        b.state = BlockState.VERIFY
        return [Send(m.Verify(b.number, hash_key, tag, key.length, refill, pa_seed))]

    def _refill_bits(self, secret_bits: int) -> int:
        """Refill for the authentication pad (:func:`keyserver.qkd.blocks.refill_bits`)."""
        return refill_bits(secret_bits, self.auth_available, self.auth_used_per_block)

    def _on_confirm(self, msg: m.Confirm) -> list[Output]:
        b = self._get(msg.block)
        if b.state is not BlockState.VERIFY or b.split is None:
            raise ProtocolError("confirm before verify")
        if not msg.ok:
            try:
                reason = AbortReason(msg.reason)
            except ValueError:
                reason = AbortReason.PROTOCOL_ERROR
            return [self._abort(b, reason)]
        keys, to_rx, to_tx = b.split
        b.state = BlockState.STORING
        self.previous_qber = b.stats.qber
        return [StoreBlock(b.number, keys, to_rx, to_tx, b.stats)]

    def stored(self, block: int) -> list[Output]:
        """The module stored ``block``: tell the receiver (its keys become deliverable)."""
        b = self._blocks.pop(block, None)
        if b is None:
            return []
        return [Send(m.Commit(block)), BlockCommitted(block, b.stats)]


class Bob(_Party):
    """The receiver's post-processing."""

    def __init__(self, params: LinkParams, link: str, key_size: int, random: RandomSource) -> None:
        super().__init__(params, link, key_size)
        self._random = random
        self._pending: dict[int, list[tuple[int, Detections]]] = {}  # (offset, frame's clicks)
        self._pending_frames: dict[int, int] = {}
        self._pending_pulses: dict[int, int] = {}
        self._bob_bits: dict[int, list[U8Array]] = {}
        self._sent_bases: dict[int, list[tuple[U8Array, U8Array]]] = {}
        self._cascade: dict[int, CascadeBob] = {}
        self._corrected: dict[int, list[U8Array]] = {}
        self._bases: dict[int, RandomSource] = {}
        self.stock = 0

    def reset(self) -> list[Output]:
        out = super().reset()
        for d in (
            self._pending,
            self._pending_frames,
            self._pending_pulses,
            self._bob_bits,
            self._sent_bases,
            self._cascade,
            self._corrected,
        ):
            d.clear()
        return out

    def basis_source(self, block: int) -> RandomSource:
        """Bob's basis choices for a block (one stream per block)."""
        src = self._bases.get(block)
        if src is None:
            src = self._random.child(b"bases%d" % block)
            self._bases = {k: v for k, v in self._bases.items() if k > block - 2}
            self._bases[block] = src
        return src

    def on_frame(
        self, block: int, frame: int, offset: int, pulses: int, det: Detections, last: bool
    ) -> list[Output]:
        """Bob's detections in one frame (positions relative to the frame)."""
        if block not in self._blocks:
            self._blocks[block] = _Block(block, BlockStats(block))
            self._pending[block] = []
            self._pending_pulses[block] = 0
            self._bob_bits[block] = []
            self._sent_bases[block] = []
        b = self._blocks[block]
        if b.state is not BlockState.SIFTING:
            return []
        b.stats.pulses += pulses
        self._pending[block].append((offset, det))
        self._pending_frames[block] = frame + 1
        self._pending_pulses[block] += pulses
        held = sum(d.positions.shape[0] for _, d in self._pending[block])
        if last or held >= BATCH_DETECTIONS or self._pending_pulses[block] >= BATCH_PULSES:
            return self._flush(b, last)
        return []

    def _flush(self, b: _Block, last: bool) -> list[Output]:
        dets = self._pending[b.number]
        self._pending[b.number] = []
        self._pending_pulses[b.number] = 0
        count = sum(d.positions.shape[0] for _, d in dets)
        if count == 0:
            if last:
                return [
                    self._abort(b, AbortReason.TOO_FEW_DETECTIONS),
                    Send(m.Abort(b.number, int(AbortReason.TOO_FEW_DETECTIONS))),
                ]
            return []
        gaps = np.empty(count, dtype="<u4")  # gaps[0] holds nothing: the first position
        first = -1
        last_pos = -1
        at = 0
        for offset, d in dets:
            k = d.positions.shape[0]
            if k == 0:
                continue
            head = offset + int(d.positions[0])
            if first < 0:
                first = head
            elif head - last_pos >= 2**32:
                return [
                    self._abort(b, AbortReason.PROTOCOL_ERROR),
                    Send(m.Abort(b.number, int(AbortReason.PROTOCOL_ERROR))),
                ]
            else:
                gaps[at] = head - last_pos
            gaps[at + 1 : at + k] = np.diff(d.positions)
            last_pos = offset + int(d.positions[-1])
            at += k
        bases = np.concatenate([d.bases for _, d in dets])
        bits = np.concatenate([d.bits for _, d in dets])
        self._sent_bases[b.number].append((bases, bits))
        msg = m.Detections(
            b.number,
            b.batches,
            self._pending_frames[b.number],
            last,
            first,
            count,
            gaps[1:].tobytes(),
            _pack(bases),
        )
        b.batches += 1
        if last:
            b.sifting_done = True
        b.stats.detections += count
        return [Send(msg)]

    def receive(self, msg: m.Message) -> list[Output]:
        if isinstance(msg, m.Sifting):
            return self._on_sifting(msg)
        if isinstance(msg, m.ParityAnswer):
            return self._on_parity_answer(msg)
        if isinstance(msg, m.Verify):
            return self._on_verify(msg)
        if isinstance(msg, m.Commit):
            return [BlockCommitted(msg.block, None)]
        if isinstance(msg, m.Abort):
            b = self._blocks.get(msg.block)
            if b is None:
                return []
            try:
                reason = AbortReason(msg.reason)
            except ValueError:
                reason = AbortReason.PROTOCOL_ERROR
            return [self._abort(b, reason)]
        raise ProtocolError(f"the receiver does not expect {type(msg).__name__}")

    def _on_sifting(self, msg: m.Sifting) -> list[Output]:
        b = self._get(msg.block)
        sent = self._sent_bases.get(msg.block, [])
        if b.state is not BlockState.SIFTING or not sent:
            raise ProtocolError("sifting without detections")
        bob_bases, bob_bits = sent[0]
        count = bob_bases.shape[0]
        if len(msg.bases) != (count + 7) // 8:
            raise ProtocolError(f"Sifting.bases: {len(msg.bases)} bytes for {count} bits")
        intensity = np.frombuffer(msg.intensities, dtype=np.uint8)
        z_bits, nz, nx, mx, status = _sift_bob(
            np.frombuffer(msg.bases, dtype=np.uint8),
            bob_bases,
            bob_bits,
            intensity,
            np.frombuffer(msg.x_bits, dtype=np.uint8),
        )
        if status != 0:
            raise ProtocolError("Sifting does not match the detections (intensities, X bits)")
        sent.pop(0)
        for k in range(3):
            b.n_x[k] += int(nx[k])
            b.m_x[k] += int(mx[k])
            b.n_z[k] += int(nz[k])
        self._bob_bits[msg.block].append(z_bits)
        if not (b.sifting_done and not sent):
            return []
        return self._estimate(b)

    def _estimate(self, b: _Block) -> list[Output]:
        b.freeze_counts()
        b.stats.qber = b.stats.qber_x
        b.key_string = np.concatenate(self._bob_bits.pop(b.number))
        self._sent_bases.pop(b.number, None)
        self._pending.pop(b.number, None)
        b.cascade_seed = self._random.bytes(32)
        est = m.Estimate(b.number, b.m_x[0], b.m_x[1], b.m_x[2], b.cascade_seed)
        expected = self._expected_qber(b)
        reason = abort_decision(self.params, b.counts(), expected)
        if reason is not None:
            return [Send(est), self._abort(b, reason)]
        b.state = BlockState.CASCADE
        self._corrected[b.number] = []
        return [Send(est), *self._next_group(b, expected)]

    def _next_group(self, b: _Block, qber: float) -> list[Output]:
        assert b.key_string is not None
        n = b.key_string.shape[0]
        casc = self._cascade.get(b.number)
        if casc is not None:
            b.leak += casc.leaked_bits
            b.errors += casc.corrected
            b.stats.cascade_rounds += casc.rounds
            self._corrected[b.number].append(casc.corrected_bits())
        b.group += 1
        lo = b.group * GROUP_BITS
        if lo >= n:
            self._cascade.pop(b.number, None)
            b.stats.cascade_leak = b.leak
            b.stats.qber = b.errors / n
            return [Send(m.Reconciled(b.number, b.errors, b.leak))]
        bits = b.key_string[lo : min(n, lo + GROUP_BITS)]
        casc = CascadeBob(
            bits, b.cascade_seed + b.group.to_bytes(4, "big"), schedule(qber, bits.shape[0])
        )
        self._cascade[b.number] = casc
        return [Send(self._request(b, casc.first_request()))]

    def _request(self, b: _Block, req: CascadeRequest) -> m.ParityRequest:
        casc = self._cascade[b.number]
        return m.ParityRequest(
            b.number,
            b.group,
            casc.rounds,
            req.start_block,
            req.passes.astype(np.uint8).tobytes(),
            req.lo.astype("<u4").tobytes(),
            req.hi.astype("<u4").tobytes(),
        )

    def _on_parity_answer(self, msg: m.ParityAnswer) -> list[Output]:
        b = self._get(msg.block)
        casc = self._cascade.get(msg.block)
        if b.state is not BlockState.CASCADE or casc is None or msg.group != b.group:
            raise ProtocolError("parity answer outside error correction")
        if msg.round != casc.rounds or msg.count != casc.expected_answer_bits():
            raise ProtocolError("parity answer does not match the request")
        parities = _unpack(msg.parities, msg.count, "ParityAnswer.parities")
        try:
            nxt = casc.on_answer(parities)
        except CascadeError:
            return [
                self._abort(b, AbortReason.RECONCILIATION_FAILED),
                Send(m.Abort(b.number, int(AbortReason.RECONCILIATION_FAILED))),
            ]
        if nxt is None:
            return self._next_group(b, self._expected_qber(b))
        return [Send(self._request(b, nxt))]

    def _on_verify(self, msg: m.Verify) -> list[Output]:
        b = self._get(msg.block)
        if b.state is not BlockState.CASCADE or b.number in self._cascade or b.key_string is None:
            raise ProtocolError("verify before error correction finished")
        corrected = np.concatenate(self._corrected.pop(b.number, []) or [np.zeros(0, np.uint8)])
        n = corrected.shape[0]
        b.stats.verification_leak = TAG_BITS
        key = block_secret_length(self.params, b.counts(), b.leak + TAG_BITS)
        bad_plan = (
            len(msg.hash_key) != HASH_KEY_BYTES
            or msg.secret_bits != key.length
            or msg.auth_refill_bits % 128
            or msg.auth_refill_bits > msg.secret_bits
            or len(msg.pa_seed) != seed_bytes(n, max(key.length, 1))
        )
        if bad_plan:
            return [
                self._abort(b, AbortReason.PROTOCOL_ERROR),
                Send(m.Confirm(b.number, False, int(AbortReason.PROTOCOL_ERROR), self.stock)),
            ]
        if not tags_equal(verification_tag(corrected, msg.hash_key), msg.tag):
            return [
                self._abort(b, AbortReason.VERIFICATION_FAILED),
                Send(m.Confirm(b.number, False, int(AbortReason.VERIFICATION_FAILED), self.stock)),
            ]
        b.final_key = amplify(corrected, msg.pa_seed, key.length)
        b.split = split_key(
            self.link, b.number, b.final_key, key.length, msg.auth_refill_bits, self.key_size
        )
        self._finish_stats(b, key, msg.auth_refill_bits, len(b.split[0]))
        b.key_string = None
        b.state = BlockState.STORING
        self.previous_qber = b.stats.qber
        keys, to_rx, to_tx = b.split
        return [StoreBlock(b.number, keys, to_rx, to_tx, b.stats)]

    def stored(self, block: int) -> list[Output]:
        """The module stored ``block`` (pending): confirm it to the transmitter."""
        b = self._blocks.pop(block, None)
        if b is None:
            return []
        return [Send(m.Confirm(block, True, 0, self.stock))]


def asymptotic_bits_per_pulse(params: LinkParams, ec_efficiency: float) -> float:
    return asymptotic_rate(params, ec_efficiency)
