"""The emulated link: a block's outcome sampled from the closed-form physics and finite-key model.

An ``emulated`` module pair delivers key at the rate, QBER and block cadence that the per-pulse
simulation (``physics`` fidelity) gives for the same link, at a tiny fraction of its cost: no
pulse, photon or Cascade round is simulated. Per block:

* **Computed** (closed form, :mod:`keyserver.qkd.physics`): every intensity's click probability
  (gain) and error probability per pulse, Eve's intercept-resend included
  (:func:`~keyserver.qkd.physics.click_probabilities`: she adds ``p (1/4 - e_d/2)`` to the QBER
  while keeping the gain), with the probabilities the source realises
  (:func:`~keyserver.qkd.physics.quantised_probabilities`).
* **Sampled** (the block's statistical fluctuation, with the nature generator): per intensity k,
  the key-basis detections ``n_Z,k ~ Bin(N, p_k p_Z^2 Q_k)``, the test-basis detections
  ``n_X,k ~ Bin(N, p_k (1 - p_Z)^2 Q_k)`` (N pulses per block), and the errors among them
  ``~ Bin(n, E_k)``. A binomial with a mean below :data:`EXACT_MEAN` is drawn exactly (inversion);
  above it by the normal approximation with continuity correction (its error is far below the
  block's own fluctuation).
* **Decided exactly as the physics pair decides** (:mod:`keyserver.qkd.blocks`): the abort after
  parameter estimation (signal X error rate above ``qber_abort``, or no key in Lim et al.'s
  finite-key bound with the planned leakage), and the secret length ``l`` from the sampled
  counts. Error correction is not run: its leakage is ``f n_Z H2(QBER)`` with ``f`` the
  efficiency the project's Cascade measured (:func:`cascade_efficiency`), plus the 128-bit
  verification tag. Cascade and verification failures (rare in the physics pair) are not
  emulated.
* **Cadence**: a session's blocks ramp up (:func:`block_schedule`): the first is the shortest
  of ``planned / 2^j`` (whole frames) whose expected key per pulse is at least
  :data:`RAMP_RATE_FRACTION` of the planned block's (and at least :data:`MIN_BLOCK_SECONDS`),
  and each next one doubles up to the planned size. A link's first key thus comes after one
  short block (15-37 s of link time at 70-90 km with 300 s blocks), not after the planned one;
  every block's key is still what Lim et al.'s bound gives for its own counts. The receiver
  accepts exactly these sizes.
* **Key bits**: ``l`` bits from the OS CSPRNG (``os.urandom``) at the transmitter; they reach the
  receiver over the sealed quantum channel (:mod:`keyserver.qkd.sealedchannel`), never over the
  classical one, which carries only the block's public statistics and the commit protocol.

Sans-I/O: :func:`sample_block` takes the parameters and a random generator and returns a
:class:`BlockOutcome`; :func:`check_report` is the receiver's validation. Imports no numpy.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from keyserver.qkd import messages as m
from keyserver.qkd.blocks import TAG_BITS, abort_decision, block_secret_length
from keyserver.qkd.finitekey import BasisCounts, expected_key_length
from keyserver.qkd.messages import AbortReason
from keyserver.qkd.physics import (
    LinkParams,
    binary_entropy,
    click_probabilities,
    quantised_probabilities,
)

EXACT_MEAN = 50.0
# A session's first block is the shortest planned/2^j whose expected key per pulse is at least
# this share of the planned block's (the finite-size cost of a short block bounds it).
RAMP_RATE_FRACTION = 0.25
MIN_BLOCK_SECONDS = 2.0  # ... and at least this much link time (short links: fewer tiny blocks)
# The Cascade efficiency f = leak / (n H2(QBER)) measured in this project (docs/bb84.md,
# "Error correction"): 1.08 at 2 %, 1.09 at 3-3.5 %, 1.11 at 8 % QBER.
_CASCADE_F = ((0.02, 1.08), (0.033, 1.09), (0.08, 1.11))


def cascade_efficiency(qber: float) -> float:
    """f at ``qber``: the measured points, linearly interpolated, held constant outside."""
    pts = _CASCADE_F
    if qber <= pts[0][0]:
        return pts[0][1]
    for (q0, f0), (q1, f1) in itertools.pairwise(pts):
        if qber <= q1:
            return f0 + (f1 - f0) * (qber - q0) / (q1 - q0)
    return pts[-1][1]


def binomial(rng: random.Random, n: int, p: float) -> int:
    """One draw of Bin(n, p): exact inversion for small means, else the normal approximation."""
    if n <= 0 or p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    if p > 0.5:
        return n - binomial(rng, n, 1.0 - p)
    mean = n * p
    if mean < EXACT_MEAN:
        u = rng.random()
        pmf = math.exp(n * math.log1p(-p))
        k = 0
        cdf = pmf
        ratio = p / (1.0 - p)
        while u > cdf and k < n:
            pmf *= (n - k) / (k + 1) * ratio
            k += 1
            cdf += pmf
            if pmf == 0.0 and k > mean:
                break
        return k
    draw = round(rng.gauss(mean, math.sqrt(mean * (1.0 - p))))
    return min(max(draw, 0), n)


def first_block_pulses(params: LinkParams) -> int:
    """The pulses of a session's first block (``params`` as planned: block size set): the
    shortest ``block_pulses / 2^j``, in whole frames, whose expected secret key per pulse is at
    least :data:`RAMP_RATE_FRACTION` of the planned block's, and at least
    :data:`MIN_BLOCK_SECONDS` of link time."""
    planned = params.block_pulses
    frame = params.frame_pulses if 0 < params.frame_pulses <= planned else planned
    f = params.ec_efficiency_plan
    full = expected_key_length(params, planned, f) / planned if planned > 0 else 0.0
    floor = MIN_BLOCK_SECONDS * params.clock_hz
    best = planned
    while full > 0:
        shorter = (best // 2) // frame * frame
        if shorter <= 0 or shorter >= best or shorter < floor:
            break
        if expected_key_length(params, shorter, f) / shorter < RAMP_RATE_FRACTION * full:
            break
        best = shorter
    return best


def block_sizes(params: LinkParams) -> tuple[int, ...]:
    """Every block size a session uses, in order: the first, doubling, up to the planned."""
    sizes = [first_block_pulses(params)]
    while sizes[-1] < params.block_pulses:
        sizes.append(min(2 * sizes[-1], params.block_pulses))
    return tuple(sizes)


def block_schedule(params: LinkParams) -> Iterator[int]:
    """The pulses of a session's blocks, one after the other (the last size repeats)."""
    sizes = block_sizes(params)
    yield from sizes
    while True:
        yield sizes[-1]


@dataclass(frozen=True)
class BlockOutcome:
    """One emulated block: its public statistics, the decision, and the secret length."""

    block: int
    pulses: int
    counts: BasisCounts  # integer counts
    errors_z: int
    leaked_bits: int  # error correction (modelled) + verification tag
    secret_bits: int
    reason: AbortReason | None
    phase_error: float = 0.5

    @property
    def aborted(self) -> bool:
        return self.reason is not None

    @property
    def qber(self) -> float:
        total = self.counts.total_z
        return self.errors_z / total if total else 0.5

    @property
    def qber_x(self) -> float:
        n = self.counts.n_x[0]
        return self.counts.m_x[0] / n if n else 0.5

    @property
    def seconds(self) -> float:
        """Link time of the block (set by the caller's clock rate)."""
        return float(self.pulses)


def sample_block(
    params: LinkParams,
    block: int,
    rng: random.Random,
    *,
    eve_fraction: float = 0.0,
    expected_qber: float | None = None,
    pulses: int | None = None,
) -> BlockOutcome:
    """Sample one block of ``pulses`` pulses (default ``params.block_pulses``; ``params`` as
    planned: block size set) with Eve intercepting ``eve_fraction`` of the pulses."""
    if params.block_pulses <= 0:
        raise ValueError("the link's block size is not planned (block_pulses = 0)")
    pulses = params.block_pulses if pulses is None else pulses
    if not 0 < pulses <= params.block_pulses:
        raise ValueError("a block has 1 to block_pulses pulses")
    channel = dataclasses.replace(params, eve_fraction=eve_fraction)
    probs, pz = quantised_probabilities(params)
    n_z, n_x, m_x = [], [], []
    errors = 0
    for mu_k, p_k in zip(params.intensities, probs, strict=True):
        clicks = click_probabilities(channel, mu_k)
        nz = binomial(rng, pulses, p_k * pz * pz * clicks.gain)
        nx = binomial(rng, pulses, p_k * (1.0 - pz) ** 2 * clicks.gain)
        errors += binomial(rng, nz, clicks.qber)
        n_z.append(nz)
        n_x.append(nx)
        m_x.append(binomial(rng, nx, clicks.qber))
    counts = BasisCounts(
        (n_z[0], n_z[1], n_z[2]), (n_x[0], n_x[1], n_x[2]), (m_x[0], m_x[1], m_x[2])
    )
    if expected_qber is None:
        expected_qber = m_x[0] / n_x[0] if n_x[0] else 0.05
    reason = abort_decision(params, counts, expected_qber)
    if reason is not None:
        return BlockOutcome(block, pulses, counts, errors, 0, 0, reason)
    total = int(counts.total_z)
    qber = errors / total
    leak = math.ceil(cascade_efficiency(qber) * total * binary_entropy(qber)) + TAG_BITS
    key = block_secret_length(params, counts, leak)
    if key.length <= 0:
        return BlockOutcome(
            block, pulses, counts, errors, leak, 0, AbortReason.NO_SECRET_KEY, key.phase_error
        )
    return BlockOutcome(block, pulses, counts, errors, leak, key.length, None, key.phase_error)


# -- the block's report on the classical channel, and the receiver's check ----------------------


def report(outcome: BlockOutcome, refill_bits: int, test: bool) -> m.BlockReport:
    """The transmitter's public report of a block (no key bits)."""
    c = outcome.counts
    n_z = [int(v) for v in c.n_z]
    n_x = [int(v) for v in c.n_x]
    m_x = [int(v) for v in c.m_x]
    return m.BlockReport(
        block=outcome.block,
        pulses=outcome.pulses,
        n_z0=n_z[0],
        n_z1=n_z[1],
        n_z2=n_z[2],
        n_x0=n_x[0],
        n_x1=n_x[1],
        n_x2=n_x[2],
        m_x0=m_x[0],
        m_x1=m_x[1],
        m_x2=m_x[2],
        errors_z=outcome.errors_z,
        leaked_bits=outcome.leaked_bits,
        secret_bits=outcome.secret_bits,
        auth_refill_bits=refill_bits,
        reason=int(outcome.reason) if outcome.reason is not None else 0,
        test=test,
    )


class ReportError(ValueError):
    """A block report the receiver does not accept (the block is aborted)."""


def check_report(
    params: LinkParams, msg: m.BlockReport, expected_qber: float | None
) -> BlockOutcome:
    """The receiver recomputes the decision and the secret length from the reported counts
    (as the physics pair does from its own) and refuses a report that disagrees."""
    counts = BasisCounts(
        (msg.n_z0, msg.n_z1, msg.n_z2),
        (msg.n_x0, msg.n_x1, msg.n_x2),
        (msg.m_x0, msg.m_x1, msg.m_x2),
    )
    if msg.pulses not in block_sizes(params):
        raise ReportError("block size is not one of the plan's")
    if msg.errors_z > counts.total_z or any(
        e > n for e, n in zip(counts.m_x, counts.n_x, strict=True)
    ):
        raise ReportError("more errors than detections")
    if expected_qber is None:
        expected_qber = counts.m_x[0] / counts.n_x[0] if counts.n_x[0] else 0.05
    reason = abort_decision(params, counts, expected_qber)
    secret = 0
    phase = 0.5
    if reason is None:
        key = block_secret_length(params, counts, msg.leaked_bits)
        if key.length <= 0:
            reason = AbortReason.NO_SECRET_KEY
        secret, phase = key.length, key.phase_error
    announced = AbortReason(msg.reason) if msg.reason else None
    if announced != reason or (reason is None and secret != msg.secret_bits):
        raise ReportError("the block's decision or secret length differs from the counts")
    if msg.auth_refill_bits % 128 or msg.auth_refill_bits > msg.secret_bits:
        raise ReportError("bad authentication refill")
    return BlockOutcome(
        msg.block, msg.pulses, counts, msg.errors_z, msg.leaked_bits, secret, reason, phase
    )


# -- the emulated quantum channel's frame (sealed on the wire) ---------------------------------

_KEY_FRAME = struct.Struct(">4sQI")
KEY_FRAME_MAGIC = b"QEK1"
MAX_KEY_BYTES = 64 << 20


class KeyFrameError(ValueError):
    """A malformed emulated quantum-channel frame."""


def encode_key_frame(block: int, key: bytes | bytearray) -> bytes:
    """A block's raw key material as the emulated quantum channel carries it (then sealed)."""
    if len(key) > MAX_KEY_BYTES:
        raise KeyFrameError("key material over the limit")
    return _KEY_FRAME.pack(KEY_FRAME_MAGIC, block, len(key)) + bytes(key)


def decode_key_frame(data: bytes | bytearray) -> tuple[int, bytes]:
    if len(data) < _KEY_FRAME.size:
        raise KeyFrameError("short emulated quantum-channel frame")
    magic, block, length = _KEY_FRAME.unpack_from(data)
    if magic != KEY_FRAME_MAGIC:
        raise KeyFrameError("not an emulated quantum-channel frame")
    if length > MAX_KEY_BYTES or len(data) != _KEY_FRAME.size + length:
        raise KeyFrameError("emulated quantum-channel frame length does not match its header")
    return block, bytes(data[_KEY_FRAME.size :])
