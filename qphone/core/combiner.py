"""Hybrid key combiner: ETSI TS 103 744 CatKDF over the QKD key, ML-KEM-768 and X25519 secrets.

``secret = psk || k_mlkem || k_x25519`` (psk = the QKD key, empty when a call runs PQC-only),
``f = SHA-256(len(context) || context || len(MA) || MA || len(MB) || MB)`` with 32-bit big-endian
lengths, MA/MB everything the initiator/responder sent before the key is used, and
``key = HKDF-SHA256(salt=label, IKM=secret, info=f, L)``.

A single HKDF over the concatenation is a dual-PRF-style combiner: the output is pseudorandom as
long as any one of the three inputs is secret (see docs/crypto.md for the argument and why the
concatenation order follows the ETSI exchange order).
"""

from __future__ import annotations

import hashlib

from qphone.core.kdf import hkdf

LABEL = b"qphone/1 CatKDF"
MAX_SECRET = 1 << 16


def _lv(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def catkdf_context(context: bytes, ma: bytes, mb: bytes) -> bytes:
    return hashlib.sha256(_lv(context) + _lv(ma) + _lv(mb)).digest()


def combine(
    *,
    qkd: bytes,
    mlkem: bytes,
    x25519: bytes,
    context: bytes,
    ma: bytes,
    mb: bytes,
    length: int = 32,
    label: bytes = LABEL,
) -> bytes:
    """Combine the three secrets into ``length`` bytes of key.

    ``qkd`` may be empty (PQC-only call, which the transcript records); the two public-key
    secrets must be 32 bytes each.
    """
    if len(mlkem) != 32 or len(x25519) != 32:
        raise ValueError("ML-KEM and X25519 shared secrets must be 32 bytes")
    if len(qkd) > MAX_SECRET:
        raise ValueError("QKD secret too long")
    return hkdf(qkd + mlkem + x25519, label, catkdf_context(context, ma, mb), length)
