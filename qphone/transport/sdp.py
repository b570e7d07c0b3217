"""What the transport reads from an SDP: DTLS fingerprints and whether it carries audio."""

from __future__ import annotations

from aiortc.sdp import SessionDescription

from qphone.core.channelbinding import Fingerprint, FingerprintError, common_fingerprints
from qphone.core.displaytext import printable
from qphone.transport.signaling import SignalingMessageError


def _parse(sdp: str) -> SessionDescription:
    try:
        return SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc raises assorted errors on junk SDP
        raise SignalingMessageError(f"unparseable SDP: {printable(str(exc), 200)}") from exc


def section_fingerprints(sdp: str) -> list[list[Fingerprint]]:
    """The DTLS fingerprints of each m-section (session-level ones are part of every section).

    An m-section without DTLS parameters counts as one without fingerprints. Unparseable SDP:
    SignalingMessageError; a malformed or unsupported fingerprint: FingerprintError.
    """
    sections: list[list[Fingerprint]] = []
    for media in _parse(sdp).media:
        prints = [] if media.dtls is None else media.dtls.fingerprints
        sections.append([Fingerprint.parse(fp.algorithm, fp.value) for fp in prints])
    return sections


def checked_fingerprints(sdp: str) -> tuple[Fingerprint, ...]:
    """The fingerprint set every m-section of ``sdp`` carries; FingerprintError if they disagree
    (any algorithm), if one lacks fingerprints, or if a fingerprint is malformed."""
    sections = section_fingerprints(sdp)
    if not sections:
        raise FingerprintError("the SDP has no m-section")
    return common_fingerprints(sections)


def has_audio(sdp: str) -> bool:
    return any(m.kind == "audio" for m in _parse(sdp).media)
