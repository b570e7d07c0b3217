"""DTLS certificate fingerprints and the channel binding the handshake signs (sans-I/O).

Both endpoints compute::

    binding = SHA-256("qphone/dtls-binding/v1" || 0x00 || caller_fp || answerer_fp)

where ``caller_fp`` and ``answerer_fp`` are the 32-byte SHA-256 certificate
fingerprints of the caller's and the answerer's DTLS certificates.  Each side
takes its own fingerprint from its own certificate and the peer's from the SDP
it received over signaling.  DTLS checks the peer's certificate against that SDP
fingerprint, so when a relay rewrites a fingerprint (to put its own DTLS
endpoint in the middle) the two sides end up with different bindings, and a
handshake that authenticates the binding fails.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from enum import Enum

BINDING_LABEL = b"qphone/dtls-binding/v1\x00"
SHA256_FINGERPRINT_BYTES = 32
_HEX_PAIR = re.compile(r"^[0-9A-Fa-f]{2}$")
_ALGORITHM = re.compile(r"^[a-z0-9-]{1,16}$")
_MAX_VALUE_CHARS = 64 * 3


class FingerprintError(ValueError):
    """A fingerprint is malformed or the required SHA-256 fingerprint is missing."""


class CallRole(Enum):
    CALLER = "caller"
    ANSWERER = "answerer"


@dataclass(frozen=True)
class Fingerprint:
    """A certificate fingerprint as carried in SDP (``a=fingerprint:sha-256 AB:CD:...``)."""

    algorithm: str
    digest: bytes

    @classmethod
    def parse(cls, algorithm: str, value: str) -> Fingerprint:
        """Parse the algorithm name and colon-separated hex value of an SDP fingerprint."""
        algo = algorithm.strip().lower()
        if not _ALGORITHM.match(algo):
            raise FingerprintError(f"bad fingerprint algorithm {algorithm!r}")
        if len(value) > _MAX_VALUE_CHARS:
            raise FingerprintError("fingerprint value too long")
        pairs = value.strip().split(":")
        if not pairs or not all(_HEX_PAIR.match(p) for p in pairs):
            raise FingerprintError("fingerprint value must be colon-separated hex byte pairs")
        digest = bytes.fromhex("".join(pairs))
        if algo == "sha-256" and len(digest) != SHA256_FINGERPRINT_BYTES:
            raise FingerprintError(
                f"a sha-256 fingerprint has {SHA256_FINGERPRINT_BYTES} bytes, got {len(digest)}"
            )
        return cls(algo, digest)

    @property
    def value(self) -> str:
        """The SDP spelling: upper-case hex pairs joined by colons."""
        return ":".join(f"{b:02X}" for b in self.digest)

    def __str__(self) -> str:
        return f"{self.algorithm} {self.value}"


def sha256_fingerprint(fingerprints: list[Fingerprint] | tuple[Fingerprint, ...]) -> Fingerprint:
    """The single SHA-256 fingerprint of a list; reject none or conflicting ones."""
    found = [f for f in fingerprints if f.algorithm == "sha-256"]
    if not found:
        raise FingerprintError("no sha-256 DTLS fingerprint (required for the channel binding)")
    if any(not hmac.compare_digest(f.digest, found[0].digest) for f in found[1:]):
        raise FingerprintError("conflicting sha-256 DTLS fingerprints")
    return found[0]


def channel_binding(caller: Fingerprint, answerer: Fingerprint) -> bytes:
    """SHA-256 over the canonical encoding of (caller fingerprint, answerer fingerprint)."""
    for fp in (caller, answerer):
        if fp.algorithm != "sha-256" or len(fp.digest) != SHA256_FINGERPRINT_BYTES:
            raise FingerprintError("the channel binding needs sha-256 fingerprints")
    return hashlib.sha256(BINDING_LABEL + caller.digest + answerer.digest).digest()


def binding_for_role(role: CallRole, local: Fingerprint, remote: Fingerprint) -> bytes:
    """Channel binding seen by an endpoint of ``role`` with the given local/remote prints."""
    if role is CallRole.CALLER:
        return channel_binding(local, remote)
    return channel_binding(remote, local)
