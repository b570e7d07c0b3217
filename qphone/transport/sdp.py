"""What the transport reads from an SDP: DTLS fingerprints and whether it carries audio."""

from __future__ import annotations

from aiortc.sdp import SessionDescription

from qphone.core.channelbinding import Fingerprint, sha256_fingerprint
from qphone.transport.signaling import SignalingMessageError


def fingerprints_of(sdp: str) -> list[Fingerprint]:
    """Every DTLS fingerprint of every m-section (unparseable SDP: SignalingMessageError)."""
    try:
        description = SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc raises assorted errors on junk SDP
        raise SignalingMessageError(f"unparseable SDP: {exc}") from exc
    found: list[Fingerprint] = []
    for media in description.media:
        if media.dtls is None:
            continue
        for fp in media.dtls.fingerprints:
            found.append(Fingerprint.parse(fp.algorithm, fp.value))
    return found


def checked_fingerprints(sdp: str) -> list[Fingerprint]:
    """As :func:`fingerprints_of`; raises FingerprintError without a single SHA-256 one."""
    fps = fingerprints_of(sdp)
    sha256_fingerprint(fps)  # raises FingerprintError if absent or conflicting
    return fps


def has_audio(sdp: str) -> bool:
    return any(m.kind == "audio" for m in SessionDescription.parse(sdp).media)
