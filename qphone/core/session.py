"""A running call's media security, sans-I/O: rotation, frame protection, control, accounting.

Built from a :class:`HandshakeResult`. The adapter feeds it payloads, frames, control messages,
QKD keys and the time, and drains :meth:`CallSession.events` for what to do next.

Rotation protocol (AES mode). The initiator (the ETSI 014 master SAE) keeps ``lookahead``
epochs announced ahead of use: for each new epoch it mixes a fresh QKD block into the chain,
installs the receive key, and sends ``EpochAnnounce(e, key_id)``. The responder resolves the key
ID at its KME, advances its chain, installs the receive key and answers ``EpochReady(e)``. A
sender moves to epoch e+1 when its epoch is over (``rotate_frames`` frames or ``rotate_ms``,
whichever first) and the peer is known to hold e+1 for receiving; so a rotation never waits on
the network and no frame is lost to it. If e+1 is not ready, the current key stays in use
(``RotationOverdue``) for at most ``max_overdue_epochs`` more epoch lengths; then the sender
refuses (``RotationFailed``, fail closed). Receivers keep the previous epoch for ``grace_ms`` after
the first frame of the new one, then erase it.

OTP mode. The initiator keeps each direction's stream ahead of its sender's position
(``PadAnnounce``): ``lookahead`` pad blocks at first, then ``pad_lookahead_s`` seconds of talk at
the rate the stream is used (:mod:`qphone.core.paddemand`), so that little pad is left to erase
at hang-up. The responder resolves the blocks and confirms with ``PadReady``. A sender only
uses pad the other side already holds.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from qphone.core.callparams import Mode
from qphone.core.control import (
    Bye,
    ControlChannel,
    ControlMessage,
    EpochAnnounce,
    EpochReady,
    PadAnnounce,
    PadReady,
    SenderProgress,
)
from qphone.core.errors import ControlRejected, QphoneError
from qphone.core.events import (
    EpochStarted,
    FetchQkdKeys,
    KeyPurpose,
    PeerBye,
    ResolveQkdKeys,
    RotationFailed,
    RotationOverdue,
    SendControl,
    SessionEvent,
)
from qphone.core.frameprotection import (
    DEFAULT_MAX_COUNTER,
    AesFrameReceiver,
    AesFrameSender,
    FrameKey,
)
from qphone.core.handshake import HandshakeResult, Role
from qphone.core.keyaccounting import KeyAccounting
from qphone.core.keyschedule import Direction, EpochKeys, KeySchedule
from qphone.core.otp import PadReceiver, PadSender
from qphone.core.paddemand import PadDemand
from qphone.core.qkd import QkdKey

_PAD_TX = KeyPurpose.PAD_I2R  # the initiator's own sending direction

DEFAULT_MAX_OVERDUE_EPOCHS = 2  # the current key may outlast its epoch by this many epochs


@dataclass(frozen=True)
class _Pending:
    purpose: KeyPurpose
    key_ids: tuple[uuid.UUID, ...]
    epoch_or_offset: int


class CallSession:
    def __init__(
        self,
        result: HandshakeResult,
        max_counter: int = DEFAULT_MAX_COUNTER,
        max_overdue_epochs: int = DEFAULT_MAX_OVERDUE_EPOCHS,
        pad_lookahead_s: float | None = None,
    ) -> None:
        if max_overdue_epochs < 1:
            raise ValueError("max_overdue_epochs must be >= 1")
        self._max_overdue = max_overdue_epochs
        self.role = result.role
        self.params = result.params
        self.mode = result.params.mode
        self.sas = result.sas
        self.peer = result.peer
        self._accounting = KeyAccounting(handshake=result.qkd_bits, fetched=result.qkd_bits)
        initiator = result.role is Role.INITIATOR
        self.send_dir = Direction.I2R if initiator else Direction.R2I
        self.recv_dir = Direction.R2I if initiator else Direction.I2R
        sec = result.secrets
        send_key, recv_key = (
            (sec.control_i2r, sec.control_r2i) if initiator else (sec.control_r2i, sec.control_i2r)
        )
        self._control = ControlChannel(send_key, recv_key)
        self._events: list[SessionEvent] = []
        self._closed = False
        self._pending: deque[_Pending] = deque()  # responder: announcements to resolve, in order
        self._outstanding: dict[KeyPurpose, int] = {p: 0 for p in KeyPurpose}
        p = result.params
        self._low_water = p.lookahead * p.pad_block_bits // 8  # OTP: pad bytes to hold ahead
        self._rotate_s = p.rotate_ms / 1000
        self._schedule = KeySchedule(sec.chain0)
        if self.mode is Mode.AES:
            keys0 = self._schedule.epoch0()
            self._sender = AesFrameSender(
                FrameKey.derive(0, keys0.for_direction(self.send_dir)),
                max_counter,
                p.rotate_frames,
                self._rotate_s,
                self._rotate,
            )
            self._receiver = AesFrameReceiver(
                p.replay_window, p.grace_ms / 1000, self._on_new_recv_epoch
            )
            self._receiver.install(FrameKey.derive(0, keys0.for_direction(self.recv_dir)))
            self._send_keys: dict[int, FrameKey] = {}
            self._send_ready: set[int] = set()
            self._announced = 0
            self._overdue_warned = -1
            self._recv_epoch = 0
            # the hot path goes straight to the frame protection objects
            self.protect: Callable[[bytes, float], bytes] = self._sender.protect
            self.unprotect: Callable[[bytes, float], bytes] = self._receiver.unprotect
        else:
            self._schedule.close()
            self._pad_tx = PadSender(p.otp_tag_bits)
            self._pad_rx = PadReceiver(p.otp_tag_bits, p.replay_window * 64)
            self._stream_end = {Direction.I2R: 0, Direction.R2I: 0}  # announced (incl. pending)
            self._rx_highest = 0
            self._progress_step = self.params.pad_block_bits // 16  # bytes between reports
            self._next_progress = self._progress_step
            block = p.pad_block_bits // 8
            self._demand = {
                purpose: PadDemand(block, self._low_water, pad_lookahead_s)
                for purpose in (KeyPurpose.PAD_I2R, KeyPurpose.PAD_R2I)
            }
            self._tx_demand = self._demand[_PAD_TX]
            self._rx_demand = self._demand[KeyPurpose.PAD_R2I]
            initiator = self.role is Role.INITIATOR
            self.protect = self._protect_otp if initiator else self._protect_otp_responder
            self.unprotect = self._unprotect_otp if initiator else self._unprotect_otp_responder
        self._peer_epoch = 0

    # ----------------------------------------------------------------- adapter API
    def start(self) -> list[SessionEvent]:
        """Call once after the handshake: the initiator asks for its first key blocks."""
        self._top_up()
        return self.events()

    def events(self) -> list[SessionEvent]:
        out, self._events = self._events, []
        return out

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def send_epoch(self) -> int:
        return self._sender.epoch if self.mode is Mode.AES else 0

    @property
    def recv_epoch(self) -> int:
        return self._recv_epoch if self.mode is Mode.AES else 0

    @property
    def recv_frame_number(self) -> int:
        """The authenticated frame number of the frame :meth:`unprotect` accepted last (-1: none):
        AES the CTR, OTP the frame number in the KID. Playout orders frames by it."""
        if self.mode is Mode.AES:
            return self._receiver.last_counter
        return self._pad_rx.last_frame

    @property
    def pad_left_bytes(self) -> int:
        """OTP: pad this endpoint may still send with (0 in AES mode)."""
        return self._pad_tx.available if self.mode is Mode.OTP else 0

    def pad_seconds_left(self, frames_per_second: float, payload_bytes: float) -> float:
        if self.mode is not Mode.OTP:
            return float("inf")
        per_frame = payload_bytes + self.params.otp_tag_bits / 8
        return self._pad_tx.available / (per_frame * frames_per_second)

    def key_accounting(self) -> KeyAccounting:
        """A copy of the QKD bits counted so far (OTP: pad and MAC as used by the sender now)."""
        if self.mode is Mode.OTP and not self._closed:  # close() counted them last
            self._count_pad_used()
        return dataclasses.replace(self._accounting)

    def _count_pad_used(self) -> None:
        self._accounting.pad = 8 * self._pad_tx.pad_bytes_used
        self._accounting.mac = 8 * self._pad_tx.mac_bytes_used
        # the peer's stream is used up to the last frame received or position it reported
        self._accounting.received = 8 * min(self._rx_highest, self._pad_rx.end)

    def _check_open(self) -> None:
        if self._closed:
            raise QphoneError("the call session is closed")

    # ----------------------------------------------------------------- media
    # ``protect(payload, now) -> frame`` and ``unprotect(frame, now) -> payload`` are bound per
    # mode in __init__ (and replaced by a refusal on close): they run for every 20 ms frame.
    # OTP: one function per role, so that the per-frame path takes no branch it need not
    def _protect_otp(self, payload: bytes, now: float) -> bytes:
        """Initiator: protect, note the stream's position, ask for pad when below the need."""
        tx = self._pad_tx
        frame = tx.protect(payload)
        demand = self._tx_demand
        position = tx.position
        if now >= demand.next_sample:
            demand.observe(position, now)
        if tx.end - position < demand.bytes_ahead and not self._outstanding[_PAD_TX]:
            self._top_up()
        return frame

    def _protect_otp_responder(self, payload: bytes, now: float) -> bytes:
        """Responder: protect; tell the initiator how far this stream is used now and then."""
        tx = self._pad_tx
        frame = tx.protect(payload)
        position = tx.position
        if position >= self._next_progress:
            self._next_progress = position + self._progress_step
            self._send(SenderProgress(0, position))
        return frame

    def _unprotect_otp(self, frame: bytes, now: float) -> bytes:
        """Initiator: unprotect; note the peer stream's position, ask for pad when needed."""
        rx = self._pad_rx
        payload = rx.unprotect(frame)
        end = rx.last_end
        if end > self._rx_highest:
            self._rx_highest = end
            demand = self._rx_demand
            if now >= demand.next_sample:
                demand.observe(end, now)
            # the initiator holds its receive stream as announced: rx.end is its stream end
            if rx.end - end < demand.bytes_ahead:
                self._top_up()
        return payload

    def _unprotect_otp_responder(self, frame: bytes, now: float) -> bytes:
        rx = self._pad_rx
        payload = rx.unprotect(frame)
        end = rx.last_end
        if end > self._rx_highest:
            self._rx_highest = end
        return payload

    def _on_new_recv_epoch(self, epoch: int) -> None:
        if epoch > self._recv_epoch:
            self._recv_epoch = epoch
            self._events.append(EpochStarted(self.recv_dir, epoch))
            self._top_up()

    @staticmethod
    def _refuse(data: bytes, now: float) -> bytes:
        raise QphoneError("the call session is closed")

    def _rotate(self, now: float) -> None:
        nxt = self._sender.epoch + 1
        key = self._send_keys.get(nxt)
        if key is None or nxt not in self._send_ready:
            epoch = self._sender.epoch
            overdue = self._sender.overdue_epochs(now)
            if overdue >= self._max_overdue:
                self._sender.refuse(
                    f"epoch {epoch} is {overdue} epochs overdue and epoch {nxt} is not ready at "
                    "both ends: no frame is sent under the old key (fail closed)"
                )
                self._events.append(RotationFailed(epoch, overdue))
                return
            if self._overdue_warned != epoch:
                self._overdue_warned = epoch
                self._events.append(RotationOverdue(epoch))
            return
        del self._send_keys[nxt]
        self._send_ready.discard(nxt)
        self._sender.rekey(key, now)
        self._events.append(EpochStarted(self.send_dir, nxt))
        if self.role is Role.RESPONDER:
            self._send(SenderProgress(nxt, 0))
        self._top_up()

    # ----------------------------------------------------------------- key supply
    def _top_up(self) -> None:
        if self.role is not Role.INITIATOR or self._closed:
            return
        p = self.params
        if self.mode is Mode.AES:
            base = max(self._sender.epoch, self._recv_epoch, self._peer_epoch)
            want = p.lookahead - (self._announced - base) - self._outstanding[KeyPurpose.EPOCH]
            self._request(KeyPurpose.EPOCH, want, p.epoch_block_bits)
            return
        block = p.pad_block_bits // 8
        held = {
            KeyPurpose.PAD_I2R: self._stream_end[Direction.I2R] - self._pad_tx_position(),
            KeyPurpose.PAD_R2I: self._stream_end[Direction.R2I] - self._rx_highest,
        }
        for purpose, have in held.items():
            missing = -(-(self._demand[purpose].bytes_ahead - have) // block)  # ceil
            self._request(purpose, missing - self._outstanding[purpose], p.pad_block_bits)

    def key_latency(self, seconds: float) -> None:
        """Initiator: a key request took ``seconds`` from asking the KME to delivery.  OTP holds
        pad ahead for that long too (:meth:`PadDemand.key_latency`); AES is not affected (its
        epochs are fetched ``lookahead`` epochs early)."""
        self._check_open()
        if self.role is Role.INITIATOR and self.mode is Mode.OTP:
            for demand in self._demand.values():
                demand.key_latency(seconds)
            self._top_up()

    @property
    def pad_horizon_s(self) -> float | None:
        """OTP initiator: seconds of talk held ahead per direction (None: not OTP, or blocks)."""
        if self.mode is not Mode.OTP or self.role is not Role.INITIATOR:
            return None
        return self._demand[_PAD_TX].horizon_s

    def _pad_tx_position(self) -> int:
        return self._pad_tx.position

    def _request(self, purpose: KeyPurpose, count: int, bits: int) -> None:
        if count > 0:
            self._outstanding[purpose] += count
            self._events.append(FetchQkdKeys(purpose, count, bits))

    def provide_qkd_keys(self, purpose: KeyPurpose, keys: Sequence[QkdKey]) -> None:
        """Hand in the keys for ``purpose``: the initiator's taken from the KME for a
        :class:`FetchQkdKeys` request, the responder's resolved for the oldest
        :class:`ResolveQkdKeys` event (whose purpose must be ``purpose``)."""
        self._check_open()
        if self.role is Role.INITIATOR:
            self._add_fetched(purpose, keys)
        else:
            self._add_resolved(purpose, keys)

    def _add_fetched(self, purpose: KeyPurpose, keys: Sequence[QkdKey]) -> None:
        p = self.params
        want_bits = p.epoch_block_bits if purpose is KeyPurpose.EPOCH else p.pad_block_bits
        if (purpose is KeyPurpose.EPOCH) != (self.mode is Mode.AES):
            raise QphoneError(f"{purpose.value} keys do not belong to a {self.mode.label} call")
        for key in keys:
            if key.bits != want_bits:
                raise ValueError(f"QKD key {key.key_id} has {key.bits} bits, need {want_bits}")
        for key in keys:
            self._outstanding[purpose] = max(0, self._outstanding[purpose] - 1)
            self._accounting.fetched += key.bits
            if purpose is KeyPurpose.EPOCH:
                epoch_keys = self._schedule.advance(key.material)
                self._accounting.epoch += key.bits
                self._install_epoch(epoch_keys)
                self._announced = epoch_keys.epoch
                self._send(EpochAnnounce(epoch_keys.epoch, (key.key_id,)))
            else:
                direction = Direction.I2R if purpose is KeyPurpose.PAD_I2R else Direction.R2I
                offset = self._stream_end[direction]
                (self._pad_tx if direction is self.send_dir else self._pad_rx).append(key.material)
                self._stream_end[direction] += len(key.material)
                self._send(PadAnnounce(direction, offset, (key.key_id,)))

    def _install_epoch(self, keys: EpochKeys) -> None:
        self._receiver.install(FrameKey.derive(keys.epoch, keys.for_direction(self.recv_dir)))
        self._send_keys[keys.epoch] = FrameKey.derive(keys.epoch, keys.for_direction(self.send_dir))

    def _add_resolved(self, purpose: KeyPurpose, keys: Sequence[QkdKey]) -> None:
        if not self._pending:
            raise QphoneError("no QKD keys are awaited")
        head = self._pending[0]
        if head.purpose is not purpose:
            raise QphoneError(
                f"{purpose.value} keys handed in while {head.purpose.value} keys are awaited"
            )
        if tuple(k.key_id for k in keys) != head.key_ids:
            raise QphoneError("QKD keys do not match the announced key IDs")
        p = self.params
        want = p.epoch_block_bits if head.purpose is KeyPurpose.EPOCH else p.pad_block_bits
        if any(k.bits != want for k in keys):
            raise QphoneError(f"announced QKD keys must be {want} bits each")
        self._pending.popleft()
        for key in keys:
            self._accounting.fetched += key.bits
            if head.purpose is KeyPurpose.EPOCH:
                epoch_keys = self._schedule.advance(key.material)
                self._accounting.epoch += key.bits
                self._install_epoch(epoch_keys)
                self._send_ready.add(epoch_keys.epoch)  # the initiator installed it first
                self._send(EpochReady(epoch_keys.epoch))
            elif head.purpose is KeyPurpose.PAD_I2R:
                self._pad_rx.append(key.material)
                self._send(PadReady(Direction.I2R, self._pad_rx.end))
            else:
                self._pad_tx.append(key.material)
                self._pad_tx.mark_usable(self._pad_tx.end)  # the initiator holds it already

    # ----------------------------------------------------------------- control
    def _send(self, msg: ControlMessage) -> None:
        self._events.append(SendControl(self._control.seal(msg)))

    def receive_control(self, data: bytes) -> None:
        """Verify and apply one control message.

        A message that fails authentication or sequencing raises ControlUnauthenticated (a
        ControlRejected) and changes nothing. An authentic message that is invalid for our
        state means the peer is broken or compromised: the session is closed (fail closed) and
        ControlRejected raised."""
        self._check_open()
        msg = self._control.open(data)
        try:
            self._apply(msg)
        except ControlRejected:
            self.close()
            raise

    def _apply(self, msg: ControlMessage) -> None:
        initiator = self.role is Role.INITIATOR
        if isinstance(msg, Bye):
            self._events.append(PeerBye(msg.reason, msg.failed))
            self.close()
        elif isinstance(msg, EpochAnnounce) and not initiator and self.mode is Mode.AES:
            expect = self._schedule.epoch + len(self._pending) + 1
            if msg.epoch != expect or len(msg.key_ids) != 1:
                raise ControlRejected(f"epoch announce for {msg.epoch}, expected {expect}")
            self._pending.append(_Pending(KeyPurpose.EPOCH, msg.key_ids, msg.epoch))
            self._events.append(
                ResolveQkdKeys(KeyPurpose.EPOCH, msg.key_ids, self.params.epoch_block_bits)
            )
        elif isinstance(msg, SenderProgress) and initiator:
            if self.mode is Mode.AES:
                if msg.epoch > self._announced:
                    raise ControlRejected(f"peer claims epoch {msg.epoch}, never announced")
                self._peer_epoch = max(self._peer_epoch, msg.epoch)
            else:
                if msg.pad_position > self._stream_end[self.recv_dir]:
                    raise ControlRejected("peer claims pad that was never announced")
                self._rx_highest = max(self._rx_highest, msg.pad_position)
            self._top_up()
        elif isinstance(msg, EpochReady) and initiator and self.mode is Mode.AES:
            if msg.epoch > self._announced or msg.epoch in self._send_ready:
                raise ControlRejected(f"epoch ready for {msg.epoch}, never announced")
            if msg.epoch > self._sender.epoch:
                self._send_ready.add(msg.epoch)
        elif isinstance(msg, PadAnnounce) and not initiator and self.mode is Mode.OTP:
            if msg.offset != self._stream_end[msg.direction] or len(msg.key_ids) != 1:
                raise ControlRejected("pad announce does not continue the pad stream")
            self._stream_end[msg.direction] += self.params.pad_block_bits // 8
            purpose = KeyPurpose.PAD_I2R if msg.direction is Direction.I2R else KeyPurpose.PAD_R2I
            self._pending.append(_Pending(purpose, msg.key_ids, msg.offset))
            self._events.append(ResolveQkdKeys(purpose, msg.key_ids, self.params.pad_block_bits))
        elif isinstance(msg, PadReady) and initiator and self.mode is Mode.OTP:
            if msg.direction is not Direction.I2R or msg.end > self._pad_tx.end:
                raise ControlRejected("pad ready for pad that was never announced")
            self._pad_tx.mark_usable(msg.end)
        else:
            raise ControlRejected(f"{type(msg).__name__} is not valid for this role and mode")

    def bye(self, reason: str = "hangup", failed: bool = False) -> bytes:
        """Seal a bye message for the peer and close the session (erasing keys)."""
        self._check_open()
        data = self._control.seal(Bye(reason, failed))
        self.close()
        return data

    def close(self) -> None:
        """Erase every key this session holds. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.protect = self.unprotect = self._refuse
        self._control.close()
        self._schedule.close()
        if self.mode is Mode.AES:
            self._receiver.close()
            self._sender.close()
            self._send_keys.clear()
        else:
            self._count_pad_used()
            self._accounting.erased_unused += 8 * self._pad_tx.close()
            self._accounting.erased_unused += 8 * max(0, self._pad_rx.end - self._rx_highest)
            self._pad_rx.close()
