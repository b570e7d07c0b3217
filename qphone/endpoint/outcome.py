"""How a call ends: :class:`CallEnd`, and the typed failures (:class:`CallFailed`) that end it.

A call ends once, for one reason: the local side hangs up (its ``--duration`` passed, its input
ended, or it was interrupted), the peer hangs up with an authenticated bye, or a failure ends it.
Every failure is a :class:`CallFailed` subclass whose message names the fix.  Exceptions from the
layers below (the kinds in :data:`HANDLED_FAILURES`: handshake, KME client, transport, OS) become
one in a single place, :func:`call_failure`, so that callers match on types, never on text.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from qphone.core.abort import Abort, AbortKind
from qphone.core.errors import HandshakeFailed, PeerIdentityMismatch, ProposalRefused
from qphone.kmeclient import KmeError, KmeOutOfKeys
from qphone.transport.errors import TransportError

_TRUST_HINT = (
    "Verify the new fingerprint out of band, then call again with --trust-new-identity to pin it."
)


class EndCause(Enum):
    DURATION = "duration"  # this side's --duration passed
    INPUT_ENDED = "input ended"  # this side's WAV input ended (and no --duration was given)
    INTERRUPTED = "interrupted"  # SIGINT / SIGTERM on this side
    PEER_BYE = "peer bye"  # the peer's authenticated bye (failed: a failure ended it there)
    FAILURE = "failure"  # a failure on this side


@dataclass(frozen=True)
class CallEnd:
    """Why a call ended; ``str()`` is the summary's ``end_reason``."""

    reason: str
    failed: bool
    cause: EndCause

    def __str__(self) -> str:
        return f"failed: {self.reason}" if self.failed else self.reason

    @staticmethod
    def duration(seconds: float) -> CallEnd:
        return CallEnd(f"duration of {seconds:g} s reached", False, EndCause.DURATION)

    @staticmethod
    def input_ended() -> CallEnd:
        return CallEnd("input finished", False, EndCause.INPUT_ENDED)

    @staticmethod
    def interrupted() -> CallEnd:
        return CallEnd("hung up (interrupted)", False, EndCause.INTERRUPTED)

    @staticmethod
    def peer_hung_up(reason: str) -> CallEnd:
        return CallEnd(f"peer hung up ({reason})", False, EndCause.PEER_BYE)


class CallFailed(Exception):
    """The call could not be set up or was ended by a failure; the message names the fix."""

    cause = EndCause.FAILURE

    def end(self) -> CallEnd:
        return CallEnd(str(self), True, self.cause)


class IdentityChanged(CallFailed):
    """The peer presented another identity than the one pinned for it: this side refused."""


class PeerAborted(CallFailed):
    """An unauthenticated abort message ended the handshake (before keys existed).

    Anyone on the path can send one, so it is shown in neutral words, with its (printable) text,
    and is never turned into advice: what it claims (``abort.kind``) is not evidence of anything.
    """

    def __init__(self, abort: Abort, during: str = "handshake") -> None:
        super().__init__(
            f"the {during} was ended by an unauthenticated abort message (it may come from the "
            "peer or from anyone on the network path; nothing in it is verified), which claims "
            f"'{abort.kind.claim}' and says: \"{abort.reason}\""
        )
        self.abort = abort


class PolicyRefused(CallFailed):
    """This side's policy refused the proposed call; ``setting`` names the rule."""

    def __init__(self, message: str, setting: str) -> None:
        super().__init__(message)
        self.setting = setting


class KeySupplyFailed(CallFailed):
    """The KME could not supply QKD key (unreachable, refused, eavesdropper alarm)."""


class OutOfKey(KeySupplyFailed):
    """No fresh QKD key in time: the KME's pool was empty or the pad ran out (fail closed)."""


class PeerFailed(CallFailed):
    """The peer ended the call because of a failure on its side (its authenticated bye)."""

    cause = EndCause.PEER_BYE


class ConnectionLost(CallFailed):
    """The transport closed during the call (peer vanished, ICE/DTLS failure)."""


class ControlMessageRefused(CallFailed):
    """An authentic control message that is invalid for this call: the call ends (fail closed)."""


def key_supply_failure(message: str, exc: KmeError) -> KeySupplyFailed:
    """OutOfKey when the KME was out of key, else KeySupplyFailed."""
    return OutOfKey(message) if isinstance(exc, KmeOutOfKeys) else KeySupplyFailed(message)


# The exceptions CallEndpoint turns into a CallFailed; anything else (SignalingError, the
# ValueError of an unreadable WAV file, ...) propagates unchanged.
HANDLED_FAILURES: tuple[type[Exception], ...] = (
    CallFailed,
    HandshakeFailed,
    KmeError,
    TransportError,
    OSError,
)


def call_failure(exc: Exception, *, peer_sae_id: str, own_sae_id: str) -> CallFailed:
    """The :class:`CallFailed` for any exception that ended a call's set-up or the call.

    Identity advice (``--trust-new-identity``) comes only from this side's own authenticated
    evidence (:class:`PeerIdentityMismatch`), never from what an abort message claims."""
    if isinstance(exc, CallFailed):
        return exc
    if isinstance(exc, PeerIdentityMismatch):
        return IdentityChanged(
            f"!!! IDENTITY OF {peer_sae_id} CHANGED ({exc}). Someone may be impersonating the "
            f"peer. {_TRUST_HINT}"
        )
    if isinstance(exc, ProposalRefused):
        return PolicyRefused(str(exc), exc.setting)
    if isinstance(exc, KmeError):
        return key_supply_failure(str(exc), exc)
    return CallFailed(str(exc))


def abort_kind(exc: HandshakeFailed) -> AbortKind:
    """What to tell the peer when this side fails its handshake with ``exc``."""
    if isinstance(exc, PeerIdentityMismatch):
        return AbortKind.IDENTITY_REFUSED
    if isinstance(exc, ProposalRefused):
        return AbortKind.POLICY_REFUSED
    return AbortKind.FAILED


def identity_changed_banner(peer_sae_id: str, pinned: str | None, presented: str) -> str:
    return (
        f"!!! IDENTITY OF {peer_sae_id} CHANGED: pinned {pinned}, now {presented}. "
        "Someone may be impersonating the peer."
    )


def identity_changed(peer_sae_id: str, pinned: str | None, presented: str) -> IdentityChanged:
    return IdentityChanged(
        identity_changed_banner(peer_sae_id, pinned, presented) + " " + _TRUST_HINT
    )
