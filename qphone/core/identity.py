"""Long-term hybrid identities: ML-DSA-65 + Ed25519, both signatures must verify."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519, mldsa

from qphone.core.errors import MalformedMessage

ED25519_PK = 32
MLDSA65_PK = 1952
ED25519_SIG = 64
MLDSA65_SIG = 3309
PUBLIC_LEN = ED25519_PK + MLDSA65_PK
SIGNATURE_LEN = ED25519_SIG + MLDSA65_SIG
PRIVATE_MAGIC = b"QPID1"
PRIVATE_LEN = len(PRIVATE_MAGIC) + 32 + 32
_SIG_DOMAIN = b"qphone/1 hybrid signature\x00"


class SignatureInvalid(Exception):
    """A hybrid signature failed: names which half."""


@dataclass(frozen=True)
class PublicIdentity:
    ed25519: bytes
    mldsa65: bytes

    def __post_init__(self) -> None:
        if len(self.ed25519) != ED25519_PK or len(self.mldsa65) != MLDSA65_PK:
            raise MalformedMessage("identity public keys have wrong sizes")

    def encode(self) -> bytes:
        return self.ed25519 + self.mldsa65

    @staticmethod
    def decode(data: bytes) -> PublicIdentity:
        if len(data) != PUBLIC_LEN:
            raise MalformedMessage(f"identity is {len(data)} bytes, expected {PUBLIC_LEN}")
        ident = PublicIdentity(bytes(data[:ED25519_PK]), bytes(data[ED25519_PK:]))
        try:  # refuse keys the libraries cannot load, at parse time
            ed25519.Ed25519PublicKey.from_public_bytes(ident.ed25519)
            mldsa.MLDSA65PublicKey.from_public_bytes(ident.mldsa65)
        except ValueError as exc:
            raise MalformedMessage(f"identity public key invalid: {exc}") from exc
        return ident

    def fingerprint(self) -> str:
        """Human-comparable fingerprint: SHA-256 of the encoding, 128 bits in 8 hex groups."""
        digest = hashlib.sha256(b"qphone/1 identity\x00" + self.encode()).hexdigest()[:32]
        return ":".join(digest[i : i + 4] for i in range(0, 32, 4))

    def verify(self, signature: bytes, message: bytes, context: bytes) -> None:
        """Raise :class:`SignatureInvalid` unless both halves verify."""
        if len(signature) != SIGNATURE_LEN:
            raise SignatureInvalid("hybrid signature has the wrong length")
        data = _SIG_DOMAIN + context + b"\x00" + message
        failures = []
        try:
            ed25519.Ed25519PublicKey.from_public_bytes(self.ed25519).verify(
                signature[:ED25519_SIG], data
            )
        except InvalidSignature:
            failures.append("Ed25519")
        try:
            mldsa.MLDSA65PublicKey.from_public_bytes(self.mldsa65).verify(
                signature[ED25519_SIG:], data, context
            )
        except InvalidSignature:
            failures.append("ML-DSA-65")
        if failures:
            raise SignatureInvalid(" and ".join(failures) + " signature invalid")


class Identity:
    """A private hybrid identity. Serialised as two 32-byte seeds (keep the file private)."""

    def __init__(self, ed25519_seed: bytes, mldsa_seed: bytes) -> None:
        self._ed = ed25519.Ed25519PrivateKey.from_private_bytes(ed25519_seed)
        self._ml = mldsa.MLDSA65PrivateKey.from_seed_bytes(mldsa_seed)
        self.public = PublicIdentity(
            self._ed.public_key().public_bytes_raw(), self._ml.public_key().public_bytes_raw()
        )

    @staticmethod
    def generate() -> Identity:
        ed = ed25519.Ed25519PrivateKey.generate()
        ml = mldsa.MLDSA65PrivateKey.generate()
        return Identity(ed.private_bytes_raw(), ml.private_bytes_raw())

    def to_bytes(self) -> bytes:
        return PRIVATE_MAGIC + self._ed.private_bytes_raw() + self._ml.private_bytes_raw()

    @staticmethod
    def from_bytes(data: bytes) -> Identity:
        if len(data) != PRIVATE_LEN or not data.startswith(PRIVATE_MAGIC):
            raise MalformedMessage(
                "not a qphone identity file (expected QPID1 + two 32-byte seeds)"
            )
        body = data[len(PRIVATE_MAGIC) :]
        return Identity(body[:32], body[32:])

    def sign(self, message: bytes, context: bytes) -> bytes:
        if len(context) > 255:
            raise ValueError("signature context must be at most 255 bytes")
        data = _SIG_DOMAIN + context + b"\x00" + message
        return self._ed.sign(data) + self._ml.sign(data, context)
