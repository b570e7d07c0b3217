"""What a running call's session does alike in both modes: control, key bookkeeping, hang-up.

:class:`~qphone.core.aessession.AesSession` and :class:`~qphone.core.otpsession.OtpSession`
each hold one :class:`CallControl` (composition).  It owns:

* the control channel (:mod:`qphone.core.control`): sealing what the mode sends, opening what
  the peer sent; a ``Bye`` is handled here, every other message goes to the mode's ``apply``;
  an authentic message that ``apply`` refuses (``ControlRejected``) closes the session;
* the events out to the adapter (:mod:`qphone.core.events`), in order;
* the key bookkeeping: the initiator's outstanding ``FetchQkdKeys`` requests per purpose, the
  responder's announced keys awaiting ``ResolveQkdKeys``, in the order they were announced,
  the checks on keys handed in, and the :class:`~qphone.core.keyaccounting.KeyAccounting`;
* the end: :meth:`CallControl.bye` and :meth:`CallControl.close`, which erase the control keys
  and, through the mode's ``erase``, every key the mode holds.  Once closed, every call that
  would use a key raises :class:`~qphone.core.errors.QphoneError`.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable, Mapping, Sequence

from qphone.core.control import Bye, ControlChannel, ControlMessage
from qphone.core.errors import ControlRejected, QphoneError
from qphone.core.events import (
    FetchQkdKeys,
    KeyPurpose,
    PeerBye,
    ResolveQkdKeys,
    SendControl,
    SessionEvent,
)
from qphone.core.handshake import HandshakeResult, Role
from qphone.core.keyaccounting import KeyAccounting
from qphone.core.keyschedule import Direction
from qphone.core.qkd import QkdKey

CLOSED = "the call session is closed"


def not_valid(msg: ControlMessage) -> ControlRejected:
    """The refusal of an authentic control message that the role and mode do not take."""
    return ControlRejected(f"{type(msg).__name__} is not valid for this role and mode")


class CallControl:
    """The half of a call session both modes share (see the module docstring).

    ``apply(msg)`` is the mode's handling of every authentic control message but ``Bye`` (it
    raises :class:`ControlRejected` for one it does not take); ``erase()`` erases the mode's
    keys (called once, when the session closes)."""

    def __init__(
        self,
        result: HandshakeResult,
        apply: Callable[[ControlMessage], None],
        erase: Callable[[], None],
    ) -> None:
        self.role = result.role
        self.params = result.params
        self.sas = result.sas
        self.peer = result.peer
        self.initiator = result.role is Role.INITIATOR
        self.send_dir = Direction.I2R if self.initiator else Direction.R2I
        self.recv_dir = Direction.R2I if self.initiator else Direction.I2R
        sec = result.secrets
        send_key, recv_key = (
            (sec.control_i2r, sec.control_r2i)
            if self.initiator
            else (sec.control_r2i, sec.control_i2r)
        )
        self._channel = ControlChannel(send_key, recv_key)
        self._apply = apply
        self._erase = erase
        self._events: list[SessionEvent] = []
        # read-only outside this class; a plain attribute, not a property: every frame reads it
        self.closed = False
        self.accounting = KeyAccounting(handshake=result.qkd_bits, fetched=result.qkd_bits)
        self._outstanding: dict[KeyPurpose, int] = {p: 0 for p in KeyPurpose}
        self._awaited: deque[ResolveQkdKeys] = deque()  # responder: announced, to resolve

    # ----------------------------------------------------------------- events
    def events(self) -> list[SessionEvent]:
        """The events since the last call, in order (the adapter acts on each)."""
        out, self._events = self._events, []
        return out

    def emit(self, event: SessionEvent) -> None:
        self._events.append(event)

    def send(self, msg: ControlMessage) -> None:
        """Seal ``msg`` for the peer (a :class:`SendControl` event)."""
        self._events.append(SendControl(self._channel.seal(msg)))

    def check_open(self) -> None:
        if self.closed:
            raise QphoneError(CLOSED)

    # ----------------------------------------------------------------- key bookkeeping
    def outstanding(self, purpose: KeyPurpose) -> int:
        """Initiator: keys for ``purpose`` asked for and not handed in yet."""
        return self._outstanding[purpose]

    def request(self, purpose: KeyPurpose, count: int, bits: int) -> None:
        """Initiator: ask the adapter for ``count`` fresh keys (nothing when ``count <= 0``)."""
        if count > 0:
            self._outstanding[purpose] += count
            self._events.append(FetchQkdKeys(purpose, count, bits))

    @property
    def awaited(self) -> int:
        """Responder: announced keys not resolved yet."""
        return len(self._awaited)

    def await_keys(self, resolve: ResolveQkdKeys) -> None:
        """Responder: the peer announced these keys; ask the adapter to resolve them."""
        self._awaited.append(resolve)
        self._events.append(resolve)

    def take_fetched(
        self, purpose: KeyPurpose, keys: Sequence[QkdKey], bits: Mapping[KeyPurpose, int]
    ) -> None:
        """Initiator: check keys fetched for ``purpose`` (``bits``: the mode's key size per
        purpose) and count them; raises before anything is counted."""
        want = bits.get(purpose)
        if want is None:
            raise QphoneError(
                f"{purpose.value} keys do not belong to a {self.params.mode.label} call"
            )
        for key in keys:
            if key.bits != want:
                raise ValueError(f"QKD key {key.key_id} has {key.bits} bits, need {want}")
        self._outstanding[purpose] = max(0, self._outstanding[purpose] - len(keys))
        self.accounting.fetched += sum(key.bits for key in keys)

    def take_resolved(self, purpose: KeyPurpose, keys: Sequence[QkdKey]) -> None:
        """Responder: check keys resolved for the oldest announcement (its purpose, IDs and
        size) and count them; raises before anything is counted."""
        if not self._awaited:
            raise QphoneError("no QKD keys are awaited")
        head = self._awaited[0]
        if head.purpose is not purpose:
            raise QphoneError(
                f"{purpose.value} keys handed in while {head.purpose.value} keys are awaited"
            )
        if tuple(k.key_id for k in keys) != head.key_ids:
            raise QphoneError("QKD keys do not match the announced key IDs")
        if any(k.bits != head.bits for k in keys):
            raise QphoneError(f"announced QKD keys must be {head.bits} bits each")
        self._awaited.popleft()
        self.accounting.fetched += sum(key.bits for key in keys)

    def accounting_snapshot(self) -> KeyAccounting:
        return dataclasses.replace(self.accounting)

    # ----------------------------------------------------------------- control and the end
    def receive(self, data: bytes) -> None:
        """Verify and apply one control message.

        A message that fails authentication or sequencing raises ControlUnauthenticated (a
        ControlRejected) and changes nothing. An authentic message that is invalid for the
        session's state means the peer is broken or compromised: the session is closed (fail
        closed) and ControlRejected raised."""
        self.check_open()
        msg = self._channel.open(data)
        try:
            if isinstance(msg, Bye):
                self._events.append(PeerBye(msg.reason, msg.failed))
                self.close()
            else:
                self._apply(msg)
        except ControlRejected:
            self.close()
            raise

    def bye(self, reason: str, failed: bool) -> bytes:
        """Seal a bye message for the peer and close the session (erasing keys)."""
        self.check_open()
        data = self._channel.seal(Bye(reason, failed))
        self.close()
        return data

    def close(self) -> None:
        """Erase every key the session holds: the mode's, then the control keys. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self._erase()
        self._channel.close()
