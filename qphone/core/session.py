"""A running call's media security, sans-I/O: the one interface of both modes, and its factory.

:func:`new_session` makes the session for a :class:`~qphone.core.handshake.HandshakeResult`:
an :class:`~qphone.core.aessession.AesSession` (AES-256-GCM frames, the key rotated with every
QKD block) or an :class:`~qphone.core.otpsession.OtpSession` (one-time pad and Wegman-Carter
MAC), after the call's mode.  Both implement :class:`CallSession`; what they share (control
channel, events, key bookkeeping and accounting, hang-up and key erasure) is one
:class:`~qphone.core.callcontrol.CallControl` each holds.

The adapter feeds a session payloads, frames, control messages, QKD keys and the time, and
drains :meth:`CallSession.events` for what to do next (:mod:`qphone.core.events`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from qphone.core.aessession import DEFAULT_MAX_OVERDUE_EPOCHS, AesSession
from qphone.core.callparams import CallParams, Mode
from qphone.core.events import KeyPurpose, SessionEvent
from qphone.core.frameprotection import DEFAULT_MAX_COUNTER
from qphone.core.handshake import HandshakeResult, Role
from qphone.core.identity import PublicIdentity
from qphone.core.keyaccounting import KeyAccounting
from qphone.core.keyschedule import Direction
from qphone.core.openedframe import OpenedFrame
from qphone.core.otpsession import OtpSession
from qphone.core.qkd import QkdKey


class CallSession(Protocol):
    """A running call's media security, whichever the mode."""

    @property
    def role(self) -> Role: ...

    @property
    def params(self) -> CallParams: ...

    @property
    def mode(self) -> Mode: ...

    @property
    def sas(self) -> str: ...

    @property
    def peer(self) -> PublicIdentity: ...

    @property
    def send_dir(self) -> Direction: ...

    @property
    def recv_dir(self) -> Direction: ...

    @property
    def closed(self) -> bool:
        """True once the session ended (bye, close, or an authentic invalid control message):
        its keys are erased and every call that would use one raises QphoneError."""
        ...

    @property
    def send_epoch(self) -> int:
        """AES: the epoch frames are sent under now (OTP: 0)."""
        ...

    @property
    def recv_epoch(self) -> int:
        """AES: the newest epoch a frame was received from (OTP: 0)."""
        ...

    @property
    def pad_left_bytes(self) -> int:
        """OTP: pad this endpoint may still send with (AES: 0)."""
        ...

    @property
    def pad_horizon_s(self) -> float | None:
        """OTP initiator: seconds of talk held ahead per direction (else None)."""
        ...

    def start(self) -> list[SessionEvent]:
        """Call once after the handshake: the initiator asks for its first key blocks."""
        ...

    def events(self) -> list[SessionEvent]:
        """The events since the last call, in order."""
        ...

    def protect(self, payload: bytes, now: float) -> bytes:
        """The protected frame for ``payload``; KeyExhausted when no key may protect it (the
        frame is not sent: fail closed)."""
        ...

    def unprotect(self, frame: bytes, now: float) -> OpenedFrame:
        """The payload of ``frame`` with its authenticated frame number; a FrameRejected
        subclass when the frame is refused (the session is unchanged)."""
        ...

    def pad_seconds_left(self, frames_per_second: float, payload_bytes: float) -> float:
        """OTP: seconds of talk the pad left covers at this frame rate and size (AES: inf)."""
        ...

    def key_accounting(self) -> KeyAccounting:
        """A copy of the QKD bits counted so far."""
        ...

    def key_latency(self, seconds: float) -> None:
        """Initiator: a key request took ``seconds`` from asking the KME to delivery."""
        ...

    def provide_qkd_keys(self, purpose: KeyPurpose, keys: Sequence[QkdKey]) -> None:
        """Hand in the keys of a FetchQkdKeys (initiator) or ResolveQkdKeys (responder)."""
        ...

    def receive_control(self, data: bytes) -> None:
        """Verify and apply one control message from the peer."""
        ...

    def bye(self, reason: str = "hangup", failed: bool = False) -> bytes:
        """Seal a bye message for the peer and close the session (erasing keys)."""
        ...

    def close(self) -> None:
        """Erase every key this session holds. Idempotent."""
        ...


def new_session(
    result: HandshakeResult,
    *,
    max_counter: int = DEFAULT_MAX_COUNTER,
    max_overdue_epochs: int = DEFAULT_MAX_OVERDUE_EPOCHS,
    pad_lookahead_s: float | None = None,
) -> CallSession:
    """The session for ``result``'s mode.  ``max_counter`` and ``max_overdue_epochs`` bound an
    AES call's sender (:mod:`qphone.core.aessession`); ``pad_lookahead_s`` is the talk time an
    OTP initiator holds pad ahead for (:mod:`qphone.core.paddemand`; None: ``lookahead``
    blocks)."""
    if max_overdue_epochs < 1:
        raise ValueError("max_overdue_epochs must be >= 1")
    if result.params.mode is Mode.AES:
        return AesSession(result, max_counter, max_overdue_epochs)
    return OtpSession(result, pad_lookahead_s)
