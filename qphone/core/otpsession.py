"""A running OTP-mode call, sans-I/O: the two pad streams and one-time-pad frame protection.

Built from an OTP call's :class:`~qphone.core.handshake.HandshakeResult` (through
:func:`qphone.core.session.new_session`); it implements :class:`~qphone.core.session.CallSession`.
What both modes share (control channel, events, key bookkeeping, hang-up) is its
:class:`~qphone.core.callcontrol.CallControl`.

Pad supply. Each direction has a pad stream (:mod:`qphone.core.otp`). The initiator (the ETSI
014 master SAE, who fetches every block) keeps each stream ahead of its sender's position
(``PadAnnounce``): ``lookahead`` pad blocks at first, then ``pad_lookahead_s`` seconds of talk
at the rate the stream is used (:mod:`qphone.core.paddemand`), so that little pad is left to
erase at hang-up. The responder resolves the blocks and confirms with ``PadReady``; it reports
how far its own stream is used now and then (``SenderProgress``), so that pad keeps coming
even when its frames do not arrive. A sender only uses pad the other side already holds.

Frames: :meth:`OtpSession.protect` is :meth:`PadSender.protect
<qphone.core.otp.PadSender.protect>` on this side's stream, :meth:`OtpSession.unprotect` is
:meth:`PadReceiver.unprotect <qphone.core.otp.PadReceiver.unprotect>` on the peer's, returning
the payload with its authenticated frame number (from the KID). Each runs for every frame: past
the pad stream, the initiator samples the stream's rate and asks for pad when it runs below
need, the responder counts its position to report; nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence

from qphone.core.callcontrol import CLOSED, CallControl, not_valid
from qphone.core.callparams import Mode
from qphone.core.control import ControlMessage, PadAnnounce, PadReady, SenderProgress
from qphone.core.errors import ControlRejected, QphoneError
from qphone.core.events import KeyPurpose, ResolveQkdKeys, SessionEvent
from qphone.core.handshake import HandshakeResult
from qphone.core.kdf import erase
from qphone.core.keyaccounting import KeyAccounting
from qphone.core.keyschedule import Direction
from qphone.core.openedframe import OpenedFrame, opened_frame
from qphone.core.otp import PadReceiver, PadSender
from qphone.core.paddemand import PadDemand
from qphone.core.qkd import QkdKey

_PAD_TX = KeyPurpose.PAD_I2R  # the initiator's own sending direction
_PAD_RX = KeyPurpose.PAD_R2I  # the initiator's receiving direction


class OtpSession:
    """An OTP-mode call session (see the module docstring)."""

    def __init__(self, result: HandshakeResult, pad_lookahead_s: float | None = None) -> None:
        if result.params.mode is not Mode.OTP:
            raise ValueError(f"an OTP session for a {result.params.mode.label} call")
        call = self._call = CallControl(result, self._apply, self._erase)
        self.role, self.params, self.sas, self.peer = call.role, call.params, call.sas, call.peer
        self.mode = Mode.OTP
        self.send_dir, self.recv_dir = call.send_dir, call.recv_dir
        self._initiator = call.initiator
        erase(result.secrets.chain0)  # no key schedule in OTP mode: chain 0 is not used
        p = result.params
        self._pad_tx = PadSender(p.otp_tag_bits)
        self._pad_rx = PadReceiver(p.otp_tag_bits, p.replay_window * 64)
        self._stream_end = {Direction.I2R: 0, Direction.R2I: 0}  # announced (incl. pending)
        self._rx_highest = 0  # the peer's stream is used up to here, as far as this side knows
        self._progress_step = p.pad_block_bits // 16  # responder: bytes between reports
        self._next_progress = self._progress_step
        block = p.pad_block_bits // 8
        low_water = p.lookahead * block  # pad bytes to hold ahead until a rate is known
        self._demand = {
            purpose: PadDemand(block, low_water, pad_lookahead_s) for purpose in (_PAD_TX, _PAD_RX)
        }
        self._tx_demand = self._demand[_PAD_TX]
        self._rx_demand = self._demand[_PAD_RX]

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
        """No epochs in OTP mode: 0."""
        return 0

    @property
    def recv_epoch(self) -> int:
        """No epochs in OTP mode: 0."""
        return 0

    @property
    def pad_left_bytes(self) -> int:
        """Pad this endpoint may still send with."""
        return self._pad_tx.available

    def pad_seconds_left(self, frames_per_second: float, payload_bytes: float) -> float:
        """Seconds of talk the pad this endpoint may send with covers."""
        per_frame = payload_bytes + self.params.otp_tag_bits / 8
        return self._pad_tx.available / (per_frame * frames_per_second)

    @property
    def pad_horizon_s(self) -> float | None:
        """Initiator: seconds of talk held ahead per direction (None: the responder, or
        blocks)."""
        return self._tx_demand.horizon_s if self._initiator else None

    def key_accounting(self) -> KeyAccounting:
        """A copy of the QKD bits counted so far (pad and MAC as used by the sender now)."""
        if not self._call.closed:  # close() counted them last
            self._count_pad_used()
        return self._call.accounting_snapshot()

    def _count_pad_used(self) -> None:
        accounting = self._call.accounting
        accounting.pad = 8 * self._pad_tx.pad_bytes_used
        accounting.mac = 8 * self._pad_tx.mac_bytes_used
        # the peer's stream is used up to the last frame received or position it reported
        accounting.received = 8 * min(self._rx_highest, self._pad_rx.end)

    def key_latency(self, seconds: float) -> None:
        """Initiator: a key request took ``seconds`` from asking the KME to delivery: pad is
        held ahead for that long too (:meth:`PadDemand.key_latency`)."""
        self._call.check_open()
        if self._initiator:
            for demand in self._demand.values():
                demand.key_latency(seconds)
            self._top_up()

    # ----------------------------------------------------------------- media
    def protect(self, payload: bytes, now: float) -> bytes:
        """The frame for ``payload`` on this side's pad stream; KeyExhausted when the pad the
        peer holds does not cover it (the frame number is spent all the same)."""
        if self._call.closed:
            raise QphoneError(CLOSED)
        tx = self._pad_tx
        frame = tx.protect(payload)
        position = tx.position
        if self._initiator:  # note the stream's rate; ask for pad when below the need
            demand = self._tx_demand
            if now >= demand.next_sample:
                demand.observe(position, now)
            if tx.end - position < demand.bytes_ahead and not self._call.outstanding(_PAD_TX):
                self._top_up()
        elif position >= self._next_progress:  # tell the initiator how far this stream is used
            self._next_progress = position + self._progress_step
            self._call.send(SenderProgress(0, position))
        return frame

    def unprotect(self, frame: bytes, now: float) -> OpenedFrame:
        """The payload and authenticated frame number of ``frame``, or a FrameRejected
        subclass (nothing changed)."""
        if self._call.closed:
            raise QphoneError(CLOSED)
        rx = self._pad_rx
        payload = rx.unprotect(frame)
        end = rx.last_end
        if end > self._rx_highest:
            self._rx_highest = end
            if self._initiator:  # note the peer stream's rate; ask for pad when needed
                demand = self._rx_demand
                if now >= demand.next_sample:
                    demand.observe(end, now)
                # the initiator holds its receive stream as announced: rx.end is its stream end
                if rx.end - end < demand.bytes_ahead:
                    self._top_up()
        return opened_frame(payload, rx.last_frame)

    # ----------------------------------------------------------------- key supply
    def _top_up(self) -> None:
        """Initiator: ask for the blocks each direction needs to hold its demand ahead."""
        call = self._call
        if not self._initiator or call.closed:
            return
        p = self.params
        block = p.pad_block_bits // 8
        held = {
            _PAD_TX: self._stream_end[Direction.I2R] - self._pad_tx.position,
            _PAD_RX: self._stream_end[Direction.R2I] - self._rx_highest,
        }
        for purpose, have in held.items():
            missing = -(-(self._demand[purpose].bytes_ahead - have) // block)  # ceil
            call.request(purpose, missing - call.outstanding(purpose), p.pad_block_bits)

    def provide_qkd_keys(self, purpose: KeyPurpose, keys: Sequence[QkdKey]) -> None:
        """Hand in the keys for ``purpose``: the initiator's taken from the KME for a
        :class:`FetchQkdKeys` request, the responder's resolved for the oldest
        :class:`ResolveQkdKeys` event (whose purpose must be ``purpose``)."""
        call = self._call
        call.check_open()
        bits = self.params.pad_block_bits
        if self._initiator:
            call.take_fetched(purpose, keys, {_PAD_TX: bits, _PAD_RX: bits})
            direction = Direction.I2R if purpose is _PAD_TX else Direction.R2I
            stream = self._pad_tx if direction is self.send_dir else self._pad_rx
            for key in keys:
                offset = self._stream_end[direction]
                stream.append(key.material)
                self._stream_end[direction] += len(key.material)
                call.send(PadAnnounce(direction, offset, (key.key_id,)))
        else:
            call.take_resolved(purpose, keys)
            for key in keys:
                if purpose is _PAD_TX:  # the initiator's sending stream: this side receives
                    self._pad_rx.append(key.material)
                    call.send(PadReady(Direction.I2R, self._pad_rx.end))
                else:
                    self._pad_tx.append(key.material)
                    self._pad_tx.mark_usable(self._pad_tx.end)  # the initiator holds it already

    # ----------------------------------------------------------------- control
    def receive_control(self, data: bytes) -> None:
        """Verify and apply one control message (:meth:`CallControl.receive`)."""
        self._call.receive(data)

    def _apply(self, msg: ControlMessage) -> None:
        if self._initiator:
            if isinstance(msg, SenderProgress):
                if msg.pad_position > self._stream_end[self.recv_dir]:
                    raise ControlRejected("peer claims pad that was never announced")
                self._rx_highest = max(self._rx_highest, msg.pad_position)
                self._top_up()
            elif isinstance(msg, PadReady):
                if msg.direction is not Direction.I2R or msg.end > self._pad_tx.end:
                    raise ControlRejected("pad ready for pad that was never announced")
                self._pad_tx.mark_usable(msg.end)
            else:
                raise not_valid(msg)
        elif isinstance(msg, PadAnnounce):
            if msg.offset != self._stream_end[msg.direction] or len(msg.key_ids) != 1:
                raise ControlRejected("pad announce does not continue the pad stream")
            bits = self.params.pad_block_bits
            self._stream_end[msg.direction] += bits // 8
            purpose = _PAD_TX if msg.direction is Direction.I2R else _PAD_RX
            self._call.await_keys(ResolveQkdKeys(purpose, msg.key_ids, bits))
        else:
            raise not_valid(msg)

    def bye(self, reason: str = "hangup", failed: bool = False) -> bytes:
        """Seal a bye message for the peer and close the session (erasing keys)."""
        return self._call.bye(reason, failed)

    def close(self) -> None:
        """Erase every key this session holds. Idempotent."""
        self._call.close()

    def _erase(self) -> None:
        """The mode's keys (the control keys are :class:`CallControl`'s): both pad streams and
        their MAC keys; what was never used is counted as erased unused."""
        self._count_pad_used()
        accounting = self._call.accounting
        accounting.erased_unused += 8 * self._pad_tx.close()
        accounting.erased_unused += 8 * max(0, self._pad_rx.end - self._rx_highest)
        self._pad_rx.close()
