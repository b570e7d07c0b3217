"""What both parties of a link decide about one block, with no numpy: its statistics, the abort
decision after parameter estimation, the finite-key length, the key IDs and how the final key is
cut into the authentication refill and northbound keys.

Shared by the per-pulse post-processing (:mod:`keyserver.qkd.postprocessing`) and the emulated
link (:mod:`keyserver.qkd.emulation`), so both fidelities decide, name and cut keys alike.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from dataclasses import dataclass

from keyserver.qkd.finitekey import BasisCounts, FiniteKey, finite_key
from keyserver.qkd.messages import AbortReason
from keyserver.qkd.physics import LinkParams, binary_entropy, quantised_probabilities

KEY_NAMESPACE = uuid.UUID("6f1d3c2e-8a4b-5c6d-9e0f-1a2b3c4d5e6f")
TAG_BITS = 128  # the verification tag (Poly1305, keyserver.qkd.privacyamplification)
AUTH_FLOOR_BYTES = 64 * 1024  # refill each direction's pad up to this much beyond the block's use


def key_id(link: str, block: int, index: int) -> uuid.UUID:
    """The key ID both modules give key ``index`` of ``block`` (public metadata)."""
    return uuid.uuid5(KEY_NAMESPACE, f"{link}/{block}/{index}")


PROTOCOL_FIELDS = (
    "mu",
    "nu",
    "p_signal",
    "p_decoy",
    "p_z",
    "eps_sec",
    "eps_cor",
    "concentration",
    "qber_abort",
    "block_pulses",
    "frame_pulses",
    "ec_efficiency_plan",
)


def protocol_json(params: LinkParams) -> str:
    """The transmitter's protocol parameters, canonical JSON (sent in its Hello)."""
    return json.dumps({k: getattr(params, k) for k in PROTOCOL_FIELDS}, sort_keys=True)


def adopt_protocol(params: LinkParams, text: str) -> LinkParams:
    """``params`` with the transmitter's protocol parameters (ValueError if malformed)."""
    try:
        obj = json.loads(text)
    except ValueError:
        raise ValueError("protocol parameters are not JSON") from None
    if not isinstance(obj, dict) or set(obj) != set(PROTOCOL_FIELDS):
        raise ValueError("protocol parameters have the wrong fields")
    return dataclasses.replace(params, optimise=False, **obj)


@dataclass
class BlockStats:
    block: int
    pulses: int = 0
    detections: int = 0
    n_z: tuple[int, int, int] = (0, 0, 0)
    n_x: tuple[int, int, int] = (0, 0, 0)
    m_x: tuple[int, int, int] = (0, 0, 0)
    qber: float = 0.0  # exact key-basis QBER (Cascade); X-basis signal QBER before that
    qber_x: float = 0.0
    cascade_leak: int = 0
    verification_leak: int = 0
    cascade_rounds: int = 0
    secret_bits: int = 0
    key_bits_delivered: int = 0
    auth_refill_bits: int = 0
    ec_efficiency: float = 0.0
    phase_error: float = 0.0
    s_z0: float = 0.0
    s_z1: float = 0.0
    aborted: bool = False
    reason: AbortReason | None = None

    @property
    def sifted_bits(self) -> int:
        return int(sum(self.n_z))


def split_key(
    link: str, block: int, key: bytes, secret_bits: int, refill_bits: int, key_size: int
) -> tuple[list[tuple[uuid.UUID, bytes]], bytes, bytes]:
    """Cut a block's final key: refill (half per direction) first, then keys of key_size."""
    refill_bytes = refill_bits // 8
    half = refill_bytes // 2
    to_rx, to_tx = key[:half], key[half : 2 * half]
    rest = (secret_bits - 16 * half) // key_size
    kb = key_size // 8
    keys = [
        (key_id(link, block, i), key[2 * half + i * kb : 2 * half + (i + 1) * kb])
        for i in range(rest)
    ]
    return keys, to_rx, to_tx


def refill_bits(secret_bits: int, auth_available: tuple[int, int], used_per_block: int) -> int:
    """Refill for the authentication pad (bits, both directions): each direction back up to
    ``max(AUTH_FLOOR_BYTES, 4 x the pad one block used)``, at most half the block's key."""
    low = min(auth_available)
    target = max(AUTH_FLOOR_BYTES, 4 * used_per_block)
    per_direction = min(max(target - low, 0), secret_bits // 32)
    per_direction -= per_direction % 8
    return 16 * per_direction


def abort_decision(
    params: LinkParams, counts: BasisCounts, expected_qber: float
) -> AbortReason | None:
    """The decision both parties take after parameter estimation (identical inputs)."""
    if counts.n_x[0] <= 0 or counts.total_z < 100:
        return AbortReason.TOO_FEW_DETECTIONS
    if counts.m_x[0] / counts.n_x[0] > params.qber_abort:
        return AbortReason.QBER_ABOVE_THRESHOLD
    probs, _ = quantised_probabilities(params)
    planned = params.ec_efficiency_plan * counts.total_z * binary_entropy(expected_qber)
    if finite_key(counts, params, planned + TAG_BITS, probs).length <= 0:
        return AbortReason.NO_KEY_BOUND
    return None


def block_secret_length(params: LinkParams, counts: BasisCounts, leaked: int) -> FiniteKey:
    probs, _ = quantised_probabilities(params)
    return finite_key(counts, params, leaked, probs)
