"""HKDF-SHA256 (RFC 5869) helpers on top of ``cryptography``, and best-effort key erasure."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

HASH_LEN = 32


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    return HKDF.extract(hashes.SHA256(), salt, ikm)


def hkdf_expand(prk: bytes, info: bytes, length: int = HASH_LEN) -> bytes:
    return HKDFExpand(hashes.SHA256(), length, info).derive(prk)


def hkdf(ikm: bytes, salt: bytes, info: bytes, length: int = HASH_LEN) -> bytes:
    return HKDF(hashes.SHA256(), length, salt, info).derive(ikm)


def erase(buf: bytearray | None) -> None:
    """Overwrite a key buffer with zeros.

    Python cannot guarantee that no other copy exists (``bytes`` objects handed to C libraries
    are immutable and freed by the allocator), so secrets that live long are kept in
    ``bytearray`` and wiped here when retired; this is best effort, as documented in
    docs/crypto.md.
    """
    if buf is not None:
        buf[:] = bytes(len(buf))
