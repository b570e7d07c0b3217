"""DTLS certificate fingerprints, and the channel binding the handshake signs (sans-I/O).

The binding is computed from the DTLS session the two endpoints actually established, never
from SDP text::

    binding = SHA-256("qphone/dtls-binding/v2" || 0x00
                      || u32(len C) || C || u32(len A) || A || u8(len X) || X)

``C`` and ``A`` are the DER certificates of the caller and of the answerer *as used in the DTLS
handshake* (each side: its own local certificate and the certificate its peer presented), and
``X`` is the RFC 5705 keying-material exporter of that DTLS session with the RFC 9266 label
``EXPORTER-Channel-Binding`` (32 bytes, empty context). A relay that terminates DTLS on both legs
runs two DTLS sessions with two different master secrets (and its own certificate on each leg),
so the two endpoints compute different bindings whatever the SDP said, and the handshake, which
signs the binding, fails.

The SDP fingerprints are checked separately and strictly (:func:`common_fingerprints`,
:func:`check_certificate`): every m-section must carry the same fingerprints (sha-256, sha-384
or sha-512, the algorithms aiortc accepts), and the peer's certificate must match every one.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

BINDING_LABEL = b"qphone/dtls-binding/v2\x00"
EXPORTER_LABEL = b"EXPORTER-Channel-Binding"  # RFC 9266 section 2
EXPORTER_CONTEXT = b""
EXPORTER_BYTES = 32
MAX_CERTIFICATE_BYTES = 16_384
#: digest size per fingerprint algorithm (the ones aiortc 1.16 verifies)
DIGEST_BYTES = {"sha-256": 32, "sha-384": 48, "sha-512": 64}
_HEX_PAIR = re.compile(r"^[0-9A-Fa-f]{2}$")
_ALGORITHM = re.compile(r"^[a-z0-9-]{1,16}$")
_MAX_VALUE_CHARS = 64 * 3
_MAX_PER_SECTION = 8


class FingerprintError(ValueError):
    """A fingerprint is malformed, missing, of an unsupported algorithm, or they disagree."""


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
            raise FingerprintError(f"bad fingerprint algorithm {algorithm[:20]!r}")
        if algo not in DIGEST_BYTES:
            raise FingerprintError(
                f"unsupported fingerprint algorithm {algo!r} (use one of "
                + ", ".join(DIGEST_BYTES)
                + ")"
            )
        if len(value) > _MAX_VALUE_CHARS:
            raise FingerprintError("fingerprint value too long")
        pairs = value.strip().split(":")
        if not pairs or not all(_HEX_PAIR.match(p) for p in pairs):
            raise FingerprintError("fingerprint value must be colon-separated hex byte pairs")
        digest = bytes.fromhex("".join(pairs))
        if len(digest) != DIGEST_BYTES[algo]:
            raise FingerprintError(
                f"a {algo} fingerprint has {DIGEST_BYTES[algo]} bytes, got {len(digest)}"
            )
        return cls(algo, digest)

    @classmethod
    def of(cls, algorithm: str, certificate_der: bytes) -> Fingerprint:
        """The fingerprint of a DER certificate (RFC 8122: the hash of the DER encoding)."""
        if algorithm not in DIGEST_BYTES:
            raise FingerprintError(f"unsupported fingerprint algorithm {algorithm!r}")
        return cls(algorithm, hashlib.new(algorithm.replace("-", ""), certificate_der).digest())

    @property
    def value(self) -> str:
        """The SDP spelling: upper-case hex pairs joined by colons."""
        return ":".join(f"{b:02X}" for b in self.digest)

    def __str__(self) -> str:
        return f"{self.algorithm} {self.value}"


def common_fingerprints(sections: Sequence[Sequence[Fingerprint]]) -> tuple[Fingerprint, ...]:
    """The one fingerprint set that every m-section carries; refuse anything else.

    Every section must hold at least one fingerprint, at most one per algorithm, and exactly
    the same ones as every other section (any algorithm), so that a relay cannot show DTLS one
    certificate and the rest of the SDP another.
    """
    if not sections:
        raise FingerprintError("the SDP has no m-section with a DTLS fingerprint")
    sets: list[dict[str, bytes]] = []
    for index, prints in enumerate(sections):
        if not prints:
            raise FingerprintError(f"m-section {index} has no DTLS fingerprint")
        if len(prints) > _MAX_PER_SECTION:
            raise FingerprintError(f"m-section {index} has more than {_MAX_PER_SECTION} prints")
        by_algorithm: dict[str, bytes] = {}
        for fp in prints:
            if fp.algorithm in by_algorithm:
                raise FingerprintError(
                    f"m-section {index} has more than one {fp.algorithm} fingerprint"
                )
            by_algorithm[fp.algorithm] = fp.digest
        sets.append(by_algorithm)
    first = sets[0]
    for index, other in enumerate(sets[1:], start=1):
        if set(other) != set(first) or not all(
            hmac.compare_digest(other[a], first[a]) for a in first
        ):
            raise FingerprintError(
                f"the DTLS fingerprints of m-section {index} differ from those of m-section 0 "
                "(a relay may be rewriting the SDP)"
            )
    return tuple(Fingerprint(a, first[a]) for a in sorted(first))


def check_certificate(certificate_der: bytes, fingerprints: Sequence[Fingerprint]) -> None:
    """Refuse unless ``certificate_der`` matches every one of ``fingerprints`` (at least one)."""
    if not fingerprints:
        raise FingerprintError("no DTLS fingerprint to check the peer's certificate against")
    for fp in fingerprints:
        if not hmac.compare_digest(Fingerprint.of(fp.algorithm, certificate_der).digest, fp.digest):
            raise FingerprintError(
                f"the peer's DTLS certificate does not match its {fp.algorithm} fingerprint"
            )


@dataclass(frozen=True, repr=False)
class DtlsSession:
    """What one endpoint saw of the DTLS session it established (the binding's input)."""

    local_certificate: bytes  # DER
    peer_certificate: bytes  # DER
    exporter: bytes  # RFC 5705 exporter, label EXPORTER_LABEL, EXPORTER_BYTES long

    def __post_init__(self) -> None:
        for name, cert in (("local", self.local_certificate), ("peer", self.peer_certificate)):
            if not 0 < len(cert) <= MAX_CERTIFICATE_BYTES:
                raise FingerprintError(f"the {name} DTLS certificate has {len(cert)} bytes")
        if len(self.exporter) != EXPORTER_BYTES:
            raise FingerprintError(f"the DTLS exporter must be {EXPORTER_BYTES} bytes")


def channel_binding(
    caller_certificate: bytes, answerer_certificate: bytes, exporter: bytes
) -> bytes:
    """SHA-256 over the canonical encoding of (caller cert, answerer cert, DTLS exporter)."""
    h = hashlib.sha256(BINDING_LABEL)
    for cert in (caller_certificate, answerer_certificate):
        h.update(len(cert).to_bytes(4, "big"))
        h.update(cert)
    h.update(bytes((len(exporter),)))
    h.update(exporter)
    return h.digest()


def binding_for_role(role: CallRole, session: DtlsSession) -> bytes:
    """The channel binding seen by an endpoint of ``role`` that established ``session``."""
    if role is CallRole.CALLER:
        return channel_binding(
            session.local_certificate, session.peer_certificate, session.exporter
        )
    return channel_binding(session.peer_certificate, session.local_certificate, session.exporter)
