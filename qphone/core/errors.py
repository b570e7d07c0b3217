"""Exceptions raised by the sans-I/O core.

Every rejection names what was wrong; none of them leaves the object that raised it changed.
"""

from __future__ import annotations


class QphoneError(Exception):
    """Base class of all qphone core errors."""


class MalformedMessage(QphoneError):
    """Bytes that do not parse: truncated, oversized, bad field value, trailing data."""


class HandshakeFailed(QphoneError):
    """The handshake was aborted; no keys were produced. The handshake object is now closed."""


class PeerIdentityMismatch(HandshakeFailed):
    """The peer's identity is not the one expected (pinned) for it; the handshake is refused."""

    def __init__(self, presented: str, expected: str) -> None:
        super().__init__(f"peer identity {presented} is not the expected {expected}")
        self.presented = presented  # fingerprint of the identity the peer presented
        self.expected = expected  # fingerprint of the identity expected for it


class ProposalRefused(HandshakeFailed):
    """The responder's policy refuses the initiator's proposal (``setting`` names the rule)."""

    def __init__(self, message: str, setting: str) -> None:
        super().__init__(message)
        self.setting = setting


class UnexpectedMessage(HandshakeFailed):
    """A handshake or control message arrived in a state where it is not allowed."""


class FrameRejected(QphoneError):
    """A protected media frame was refused; receiver state is unchanged."""


class FrameMalformed(FrameRejected, MalformedMessage):
    """The frame does not parse (truncated, oversized, bad header)."""


class FrameAuthFailed(FrameRejected):
    """The frame's tag did not verify (tampered header, ciphertext or tag, or wrong key)."""


class FrameReplayed(FrameRejected):
    """The frame's counter (or pad range) was already accepted, or is older than the window."""


class FrameKeyUnavailable(FrameRejected):
    """The frame names an epoch whose key is not installed yet or was already erased."""


class FrameWrongMode(FrameRejected):
    """An AES frame on an OTP session or the reverse."""


class KeyExhausted(QphoneError):
    """The sender refuses to protect: a counter would repeat or no fresh pad is left."""


class ControlRejected(QphoneError):
    """A control message (rekey, pad announce, bye) was refused.

    Raised as such for an authentic message that is invalid for the session's state (the
    session is then closed: fail closed)."""


class ControlUnauthenticated(ControlRejected):
    """A control message failed its size, MAC or sequence check: it is not an authentic next
    message from the peer (forged, replayed or reordered); session state is unchanged."""
