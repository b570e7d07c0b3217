"""A running AES-mode call, sans-I/O: epoch rotation and AES-GCM frame protection.

Built from an AES call's :class:`~qphone.core.handshake.HandshakeResult` (through
:func:`qphone.core.session.new_session`); it implements :class:`~qphone.core.session.CallSession`.
What both modes share (control channel, events, key bookkeeping, hang-up) is its
:class:`~qphone.core.callcontrol.CallControl`.

Rotation protocol. The initiator (the ETSI 014 master SAE) keeps ``lookahead`` epochs announced
ahead of use: for each new epoch it mixes a fresh QKD block into the chain
(:mod:`qphone.core.keyschedule`), installs the receive key, and sends ``EpochAnnounce(e,
key_id)``. The responder resolves the key ID at its KME, advances its chain, installs the
receive key and answers ``EpochReady(e)``. A sender moves to epoch e+1 when its epoch is over
(``rotate_frames`` frames or ``rotate_ms``, whichever first) and the peer is known to hold e+1
for receiving; so a rotation never waits on the network and no frame is lost to it. If e+1 is
not ready, the current key stays in use (``RotationOverdue``) for at most
``max_overdue_epochs`` more epoch lengths; then the sender refuses (``RotationFailed``, fail
closed). Receivers keep the previous epoch for ``grace_ms`` after the first frame of the new
one, then erase it. The responder tells the initiator when it moves to a new epoch
(``SenderProgress``), so that epochs keep coming even when its frames do not arrive.

Frames: :meth:`AesSession.protect` is :meth:`AesFrameSender.protect
<qphone.core.frameprotection.AesFrameSender.protect>` under the current epoch's key,
:meth:`AesSession.unprotect` is :meth:`AesFrameReceiver.unprotect
<qphone.core.frameprotection.AesFrameReceiver.unprotect>`, returning the payload with its
authenticated frame number (the CTR).
"""

from __future__ import annotations

from collections.abc import Sequence

from qphone.core.callcontrol import CLOSED, CallControl, not_valid
from qphone.core.callparams import Mode
from qphone.core.control import ControlMessage, EpochAnnounce, EpochReady, SenderProgress
from qphone.core.errors import ControlRejected, QphoneError
from qphone.core.events import (
    EpochStarted,
    KeyPurpose,
    ResolveQkdKeys,
    RotationFailed,
    RotationOverdue,
    SessionEvent,
)
from qphone.core.frameprotection import (
    DEFAULT_MAX_COUNTER,
    AesFrameReceiver,
    AesFrameSender,
    FrameKey,
)
from qphone.core.handshake import HandshakeResult
from qphone.core.keyaccounting import KeyAccounting
from qphone.core.keyschedule import EpochKeys, KeySchedule
from qphone.core.openedframe import OpenedFrame
from qphone.core.qkd import QkdKey

DEFAULT_MAX_OVERDUE_EPOCHS = 2  # the current key may outlast its epoch by this many epochs


class AesSession:
    """An AES-mode call session (see the module docstring)."""

    def __init__(
        self,
        result: HandshakeResult,
        max_counter: int = DEFAULT_MAX_COUNTER,
        max_overdue_epochs: int = DEFAULT_MAX_OVERDUE_EPOCHS,
    ) -> None:
        if max_overdue_epochs < 1:
            raise ValueError("max_overdue_epochs must be >= 1")
        if result.params.mode is not Mode.AES:
            raise ValueError(f"an AES session for a {result.params.mode.label} call")
        self._max_overdue = max_overdue_epochs
        call = self._call = CallControl(result, self._apply, self._erase)
        self.role, self.params, self.sas, self.peer = call.role, call.params, call.sas, call.peer
        self.mode = Mode.AES
        self.send_dir, self.recv_dir = call.send_dir, call.recv_dir
        self._initiator = call.initiator
        p = result.params
        self._schedule = KeySchedule(result.secrets.chain0)  # erases the result's chain 0
        keys0 = self._schedule.epoch0()
        self._sender = AesFrameSender(
            FrameKey.derive(0, keys0.for_direction(self.send_dir)),
            max_counter,
            p.rotate_frames,
            p.rotate_ms / 1000,
            self._rotate,
        )
        self._receiver = AesFrameReceiver(p.replay_window, p.grace_ms / 1000, self._on_new_epoch)
        self._receiver.install(FrameKey.derive(0, keys0.for_direction(self.recv_dir)))
        self._send_keys: dict[int, FrameKey] = {}  # installed ahead, by epoch
        self._send_ready: set[int] = set()  # epochs the peer holds for receiving
        self._announced = 0  # initiator: the newest epoch announced
        self._overdue_warned = -1
        self._recv_epoch = 0
        self._peer_epoch = 0  # initiator: the responder's sending epoch, as it reported

    # ----------------------------------------------------------------- adapter API
    def start(self) -> list[SessionEvent]:
        """Call once after the handshake: the initiator asks for its first key blocks."""
        self._top_up()
        return self._call.events()

    def events(self) -> list[SessionEvent]:
        return self._call.events()

    @property
    def closed(self) -> bool:
        return self._call.closed

    @property
    def send_epoch(self) -> int:
        return self._sender.epoch

    @property
    def recv_epoch(self) -> int:
        return self._recv_epoch

    @property
    def pad_left_bytes(self) -> int:
        """No pad in AES mode: 0."""
        return 0

    def pad_seconds_left(self, frames_per_second: float, payload_bytes: float) -> float:
        """No pad to run out of in AES mode: inf."""
        return float("inf")

    @property
    def pad_horizon_s(self) -> float | None:
        return None

    def key_accounting(self) -> KeyAccounting:
        """A copy of the QKD bits counted so far."""
        return self._call.accounting_snapshot()

    def key_latency(self, seconds: float) -> None:
        """A key request took ``seconds``: AES is not affected (its epochs are fetched
        ``lookahead`` epochs early)."""
        self._call.check_open()

    # ----------------------------------------------------------------- media
    def protect(self, payload: bytes, now: float) -> bytes:
        """The frame for ``payload`` under the current epoch's key (rotating first when the
        epoch is over); KeyExhausted when no key may protect it (fail closed)."""
        if self._call.closed:
            raise QphoneError(CLOSED)
        return self._sender.protect(payload, now)

    def unprotect(self, frame: bytes, now: float) -> OpenedFrame:
        """The payload and authenticated frame number (CTR) of ``frame``, or a FrameRejected
        subclass (nothing changed)."""
        if self._call.closed:
            raise QphoneError(CLOSED)
        return self._receiver.unprotect(frame, now)

    def _on_new_epoch(self, epoch: int) -> None:
        """The receiver accepted the first frame of ``epoch``."""
        if epoch > self._recv_epoch:
            self._recv_epoch = epoch
            self._call.emit(EpochStarted(self.recv_dir, epoch))
            self._top_up()

    def _rotate(self, now: float) -> None:
        """The sending epoch is over: move to the next if the peer holds it, else keep the
        current key for at most ``max_overdue_epochs`` more epochs, then refuse."""
        call, sender = self._call, self._sender
        nxt = sender.epoch + 1
        key = self._send_keys.get(nxt)
        if key is None or nxt not in self._send_ready:
            epoch = sender.epoch
            overdue = sender.overdue_epochs(now)
            if overdue >= self._max_overdue:
                sender.refuse(
                    f"epoch {epoch} is {overdue} epochs overdue and epoch {nxt} is not ready at "
                    "both ends: no frame is sent under the old key (fail closed)"
                )
                call.emit(RotationFailed(epoch, overdue))
                return
            if self._overdue_warned != epoch:
                self._overdue_warned = epoch
                call.emit(RotationOverdue(epoch))
            return
        del self._send_keys[nxt]
        self._send_ready.discard(nxt)
        sender.rekey(key, now)
        call.emit(EpochStarted(self.send_dir, nxt))
        if not self._initiator:
            call.send(SenderProgress(nxt, 0))
        self._top_up()

    # ----------------------------------------------------------------- key supply
    def _top_up(self) -> None:
        """Initiator: keep ``lookahead`` epochs announced beyond the newest one in use."""
        call = self._call
        if not self._initiator or call.closed:
            return
        p = self.params
        base = max(self._sender.epoch, self._recv_epoch, self._peer_epoch)
        want = p.lookahead - (self._announced - base) - call.outstanding(KeyPurpose.EPOCH)
        call.request(KeyPurpose.EPOCH, want, p.epoch_block_bits)

    def provide_qkd_keys(self, purpose: KeyPurpose, keys: Sequence[QkdKey]) -> None:
        """Hand in the keys for ``purpose``: the initiator's taken from the KME for a
        :class:`FetchQkdKeys` request, the responder's resolved for the oldest
        :class:`ResolveQkdKeys` event (whose purpose must be ``purpose``)."""
        call = self._call
        call.check_open()
        if self._initiator:
            call.take_fetched(purpose, keys, {KeyPurpose.EPOCH: self.params.epoch_block_bits})
            for key in keys:
                epoch_keys = self._advance(key)
                self._announced = epoch_keys.epoch
                call.send(EpochAnnounce(epoch_keys.epoch, (key.key_id,)))
        else:
            call.take_resolved(purpose, keys)
            for key in keys:
                epoch_keys = self._advance(key)
                self._send_ready.add(epoch_keys.epoch)  # the initiator installed it first
                call.send(EpochReady(epoch_keys.epoch))

    def _advance(self, key: QkdKey) -> EpochKeys:
        """Mix ``key`` into the chain and install the new epoch's keys (receive key now, send
        key for when the sender moves to it)."""
        keys = self._schedule.advance(key.material)
        self._call.accounting.epoch += key.bits
        self._receiver.install(FrameKey.derive(keys.epoch, keys.for_direction(self.recv_dir)))
        self._send_keys[keys.epoch] = FrameKey.derive(keys.epoch, keys.for_direction(self.send_dir))
        return keys

    # ----------------------------------------------------------------- control
    def receive_control(self, data: bytes) -> None:
        """Verify and apply one control message (:meth:`CallControl.receive`)."""
        self._call.receive(data)

    def _apply(self, msg: ControlMessage) -> None:
        if self._initiator:
            if isinstance(msg, SenderProgress):
                if msg.epoch > self._announced:
                    raise ControlRejected(f"peer claims epoch {msg.epoch}, never announced")
                self._peer_epoch = max(self._peer_epoch, msg.epoch)
                self._top_up()
            elif isinstance(msg, EpochReady):
                if msg.epoch > self._announced or msg.epoch in self._send_ready:
                    raise ControlRejected(f"epoch ready for {msg.epoch}, never announced")
                if msg.epoch > self._sender.epoch:
                    self._send_ready.add(msg.epoch)
            else:
                raise not_valid(msg)
        elif isinstance(msg, EpochAnnounce):
            expect = self._schedule.epoch + self._call.awaited + 1
            if msg.epoch != expect or len(msg.key_ids) != 1:
                raise ControlRejected(f"epoch announce for {msg.epoch}, expected {expect}")
            bits = self.params.epoch_block_bits
            self._call.await_keys(ResolveQkdKeys(KeyPurpose.EPOCH, msg.key_ids, bits))
        else:
            raise not_valid(msg)

    def bye(self, reason: str = "hangup", failed: bool = False) -> bytes:
        """Seal a bye message for the peer and close the session (erasing keys)."""
        return self._call.bye(reason, failed)

    def close(self) -> None:
        """Erase every key this session holds. Idempotent."""
        self._call.close()

    def _erase(self) -> None:
        """The mode's keys (the control keys are :class:`CallControl`'s): the chain, every
        epoch's frame keys."""
        self._receiver.close()
        self._sender.close()
        self._send_keys.clear()
        self._schedule.close()
