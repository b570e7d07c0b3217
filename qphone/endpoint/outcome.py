"""How a call ends: :class:`CallEnd`, and the typed failures (:class:`CallFailed`) that end it.

A call ends once, for one reason: the local side hangs up (its ``--duration`` passed, its input
ended, or it was interrupted), the peer hangs up with an authenticated bye, or a failure ends it.
Every failure is a :class:`CallFailed` subclass whose message names the fix.  Exceptions from the
layers below (the kinds in :data:`HANDLED_FAILURES`: handshake, KME client, transport, signaling,
OS) become one in a single place, :func:`call_failure`, so that callers match on types, never on
text.  An interrupt (SIGINT, SIGTERM) before the call is up is no failure: the endpoint raises
:class:`CallInterrupted`.  :func:`exit_code` is the command line's exit status for an outcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from qphone.core.abort import Abort, AbortKind
from qphone.core.displaytext import printable
from qphone.core.errors import HandshakeFailed, PeerIdentityMismatch, ProposalRefused
from qphone.core.signalmessage import RejectCode
from qphone.kmeclient import KmeError, KmeOutOfKeys, KmeReusedKey
from qphone.transport.errors import TransportError
from qphone.transport.signaling import (
    SignalingConnectError,
    SignalingError,
    SignalingRejectedError,
    SignalingTimeoutError,
)

EXIT_OK = 0  # the call took place and was hung up normally (by either side)
EXIT_FAILED = 1  # a failure ended the call or kept it from starting
EXIT_USAGE = 2  # a bad option, file, device or profile: nothing was attempted
EXIT_INTERRUPTED = 130  # interrupted (SIGINT/SIGTERM) before a call was established


def trust_hint(answering: bool = False) -> str:
    """What to do about a changed identity, for the side that saw it: the caller calls again,
    the answerer answers again, with --trust-new-identity once the fingerprint is verified."""
    again = "answer the next call" if answering else "call again"
    return (
        f"Verify the new fingerprint out of band, then {again} with --trust-new-identity to pin it."
    )


class EndCause(Enum):
    DURATION = "duration"  # this side's --duration passed
    INPUT_ENDED = "input ended"  # this side's WAV input ended (and no --duration was given)
    INTERRUPTED = "interrupted"  # SIGINT / SIGTERM on this side during the call: a hang-up
    CANCELLED = "cancelled"  # SIGINT / SIGTERM on this side before the call was up
    PEER_BYE = "peer bye"  # the peer's authenticated bye (failed: a failure ended it there)
    FAILURE = "failure"  # a failure


class EndedBy(Enum):
    """Who ended the call (the summary's ``ended_by``)."""

    THIS_SIDE = "this side"
    PEER = "peer"
    NETWORK = "network"  # neither side: the connection or the peer's address failed


@dataclass(frozen=True)
class CallEnd:
    """Why a call ended; ``str()`` is the summary's ``end_reason``."""

    reason: str
    failed: bool
    cause: EndCause
    by: EndedBy = EndedBy.THIS_SIDE

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
        return CallEnd("interrupted", False, EndCause.INTERRUPTED)

    @staticmethod
    def cancelled(doing: str) -> CallEnd:
        """Interrupted while ``doing`` (e.g. "waiting for a call"): no call took place."""
        return CallEnd(f"interrupted while {doing}", False, EndCause.CANCELLED)

    @staticmethod
    def peer_hung_up(reason: str) -> CallEnd:
        return CallEnd(f"peer hung up ({reason})", False, EndCause.PEER_BYE, EndedBy.PEER)


def exit_code(end: CallEnd | None) -> int:
    """The exit status of ``qphone call`` / ``answer`` for a call that ended with ``end``."""
    if end is None:
        return EXIT_OK
    if end.cause is EndCause.CANCELLED:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if end.failed else EXIT_OK


class CallInterrupted(Exception):
    """SIGINT or SIGTERM stopped the endpoint before a call was established (no failure)."""

    def __init__(self, end: CallEnd) -> None:
        super().__init__(str(end))
        self.end = end


class CallFailed(Exception):
    """The call could not be set up or was ended by a failure; the message names the fix."""

    cause = EndCause.FAILURE
    by = EndedBy.THIS_SIDE

    def end(self) -> CallEnd:
        return CallEnd(str(self), True, self.cause, self.by)


class IdentityChanged(CallFailed):
    """The peer presented another identity than the one pinned for it: this side refused."""


class PeerAborted(CallFailed):
    """An unauthenticated abort message ended the handshake (before keys existed).

    Anyone on the path can send one, so it is shown in neutral words, with its (printable) text,
    and is never turned into advice: what it claims (``abort.kind``) is not evidence of anything.
    ``ended_by`` says what it claims to come from: the peer (unverified, as the message says).
    """

    by = EndedBy.PEER

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


class KeyReused(KeySupplyFailed):
    """The KME served a key ID this terminal had used before: the KME is faulty; none of that
    reply's keys was used (fail closed)."""


class PeerFailed(CallFailed):
    """The peer ended the call because of a failure on its side (its authenticated bye)."""

    cause = EndCause.PEER_BYE
    by = EndedBy.PEER


class ConnectionLost(CallFailed):
    """The transport closed during the call (peer vanished, ICE/DTLS failure)."""

    by = EndedBy.NETWORK


class Unreachable(CallFailed):
    """Signaling failed: nobody listens at the address, it timed out, or this side cannot
    listen on the address it was given."""

    by = EndedBy.NETWORK


class PeerBusy(CallFailed):
    """The answerer is in another call."""

    by = EndedBy.PEER


class WrongPeer(CallFailed):
    """The SAE IDs of the two profiles do not fit: a wrong profile on one side, calling
    yourself, or a wrong address.  Found from the signaling hints, before the handshake."""


class ModeRefused(CallFailed):
    """The answerer accepts only the other mode."""

    by = EndedBy.PEER


class ControlMessageRefused(CallFailed):
    """An authentic control message that is invalid for this call: the call ends (fail closed)."""


def key_supply_failure(message: str, exc: KmeError) -> KeySupplyFailed:
    """OutOfKey when the KME was out of key, KeyReused when it re-served a key, else
    KeySupplyFailed."""
    if isinstance(exc, KmeReusedKey):
        return KeyReused(message)
    return OutOfKey(message) if isinstance(exc, KmeOutOfKeys) else KeySupplyFailed(message)


# The failures of a call's set-up and of the running call, worded once, here.


def no_handshake_key(exc: KmeError, otp: bool) -> KeySupplyFailed:
    """The caller got no QKD key for the handshake (and may not go on PQC-only)."""
    hint = "" if otp else " (or allow a PQC-only call with --allow-pqc-only)"
    return key_supply_failure(f"cannot get a QKD key from the KME: {exc}{hint}", exc)


def key_supply_stopped(exc: Exception) -> KeySupplyFailed:
    """The running call's key supply stopped: its KME failed (a :class:`KmeError`), or it
    delivered keys the session refused (anything else)."""
    if isinstance(exc, KmeError):
        return key_supply_failure(f"QKD key supply failed mid-call: {exc} (fail closed)", exc)
    return KeySupplyFailed(f"the KME delivered keys this call cannot use: {exc} (fail closed)")


def rotation_failed(epoch: int, overdue: int) -> OutOfKey:
    """An AES call's rotation was overdue for too long (``max_overdue_epochs``)."""
    return OutOfKey(
        f"key rotation could not complete: epoch {epoch} is {overdue} epochs overdue (the "
        f"limit, max_overdue_epochs) because epoch {epoch + 1} is not ready at both ends: the "
        "KME did not deliver or the peer's confirmation never arrived; the call ends (fail closed)"
    )


def peer_failed(reason: str) -> PeerFailed:
    """The peer's authenticated bye says a failure ended the call there."""
    return PeerFailed(f"the peer ended the call: {reason}")


def control_refused(exc: Exception) -> ControlMessageRefused:
    """An authentic control message this call cannot accept."""
    return ControlMessageRefused(f"control message rejected ({exc}); call ended (fail closed)")


def connection_lost(reason: str) -> ConnectionLost:
    """The transport closed during the call, for ``reason``."""
    return ConnectionLost(f"connection lost ({reason})")


def task_failed(name: str, exc: BaseException) -> CallFailed:
    """A task of the running call died of ``exc`` (a bug or a library's failure)."""
    return CallFailed(f"the {name} task failed: {type(exc).__name__}: {exc}")


# The exceptions CallEndpoint turns into a CallFailed; anything else (a bug) propagates unchanged.
HANDLED_FAILURES: tuple[type[Exception], ...] = (
    CallFailed,
    HandshakeFailed,
    KmeError,
    TransportError,
    SignalingError,
    OSError,
)


def call_failure(
    exc: Exception, *, peer_sae_id: str, own_sae_id: str, answering: bool = False
) -> CallFailed:
    """The :class:`CallFailed` for any exception that ended a call's set-up or the call.

    Identity advice (``--trust-new-identity``) comes only from this side's own authenticated
    evidence (:class:`PeerIdentityMismatch`), never from what an abort message claims."""
    if isinstance(exc, CallFailed):
        return exc
    if isinstance(exc, PeerIdentityMismatch):
        return IdentityChanged(
            f"!!! IDENTITY OF {peer_sae_id} CHANGED ({exc}). Someone may be impersonating the "
            f"peer. {trust_hint(answering)}"
        )
    if isinstance(exc, ProposalRefused):
        return PolicyRefused(str(exc), exc.setting)
    if isinstance(exc, KmeError):
        return key_supply_failure(str(exc), exc)
    if isinstance(exc, SignalingRejectedError):
        return refusal_failure(exc, own_sae_id=own_sae_id, peer_sae_id=peer_sae_id)
    if isinstance(exc, SignalingConnectError | SignalingTimeoutError):
        return Unreachable(str(exc))
    return CallFailed(str(exc))


def refusal_failure(
    exc: SignalingRejectedError, *, own_sae_id: str, peer_sae_id: str
) -> CallFailed:
    """What the caller makes of an answerer's refusal (its code and the SAE ID it gave)."""
    # Signaling is unauthenticated: the name and reason are shown only as printable text.
    them = printable(exc.sender, 128) if exc.sender else "the answerer"
    reason = printable(exc.reason)
    if exc.code is RejectCode.BUSY:
        return PeerBusy(f"{them} is busy (in another call): try again later")
    if exc.code is RejectCode.MODE:
        return ModeRefused(f"{them} refused the call: {reason}")
    if exc.code is RejectCode.WRONG_PEER:
        if exc.sender and exc.sender == own_sae_id:
            return WrongPeer(calling_yourself(own_sae_id, peer_sae_id))
        return WrongPeer(f"{them} refused the call: {reason}")
    return CallFailed(str(exc))


def calling_yourself(own_sae_id: str, peer_sae_id: str) -> str:
    """The caller's message when the answerer is the caller's own SAE."""
    return (
        f"this profile is {own_sae_id}'s, and you are calling {own_sae_id}: you are calling "
        f"yourself. One of the two terminals needs the profile of {peer_sae_id} "
        f"(the one whose [sae] id is {peer_sae_id!r})"
    )


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


def identity_changed(
    peer_sae_id: str, pinned: str | None, presented: str, answering: bool = False
) -> IdentityChanged:
    return IdentityChanged(
        identity_changed_banner(peer_sae_id, pinned, presented) + " " + trust_hint(answering)
    )
