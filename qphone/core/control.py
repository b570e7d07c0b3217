"""Control messages of a running call (after the handshake), on the reliable channel.

``type u8 | seq u32 | body | HMAC-SHA256(control key of the sender's direction)[:16]``.
Sequence numbers start at 0 and go up by one (the channel is reliable and ordered), so a
replayed, dropped or reordered control message is refused.
"""

from __future__ import annotations

import hmac
import uuid
from dataclasses import dataclass

from qphone.core.displaytext import printable
from qphone.core.errors import ControlRejected, ControlUnauthenticated, MalformedMessage
from qphone.core.kdf import erase
from qphone.core.keyschedule import Direction
from qphone.core.wire import Reader, Writer

MAC_LEN = 16
MAX_CONTROL = 4096
MAX_KEYS = 64
EPOCH_ANNOUNCE, EPOCH_READY, PAD_ANNOUNCE, PAD_READY, BYE, PROGRESS = 1, 2, 3, 4, 5, 6


@dataclass(frozen=True)
class EpochAnnounce:
    """Initiator -> responder: epoch ``epoch`` mixes in the QKD key(s) ``key_ids``."""

    epoch: int
    key_ids: tuple[uuid.UUID, ...]


@dataclass(frozen=True)
class EpochReady:
    """Responder -> initiator: epoch ``epoch`` is installed for receiving."""

    epoch: int


@dataclass(frozen=True)
class PadAnnounce:
    """Initiator -> responder: these QKD keys extend ``direction``'s pad stream at ``offset``."""

    direction: Direction
    offset: int
    key_ids: tuple[uuid.UUID, ...]


@dataclass(frozen=True)
class PadReady:
    """Responder -> initiator: it holds ``direction``'s pad stream up to ``end``."""

    direction: Direction
    end: int


@dataclass(frozen=True)
class SenderProgress:
    """Responder -> initiator: how far its sender got (epoch in use, pad stream position), so
    the initiator keeps key flowing even when the responder's frames do not reach it."""

    epoch: int
    pad_position: int


@dataclass(frozen=True)
class Bye:
    """Either side: the call ends; ``failed`` says whether a failure ended it."""

    reason: str
    failed: bool = False


ControlMessage = EpochAnnounce | EpochReady | PadAnnounce | PadReady | SenderProgress | Bye


def _encode_body(msg: ControlMessage) -> bytes:
    w = Writer()
    if isinstance(msg, EpochAnnounce):
        w.u8(EPOCH_ANNOUNCE).u32(msg.epoch).uuids(msg.key_ids)
    elif isinstance(msg, EpochReady):
        w.u8(EPOCH_READY).u32(msg.epoch)
    elif isinstance(msg, PadAnnounce):
        w.u8(PAD_ANNOUNCE).u8(msg.direction).u64(msg.offset).uuids(msg.key_ids)
    elif isinstance(msg, PadReady):
        w.u8(PAD_READY).u8(msg.direction).u64(msg.end)
    elif isinstance(msg, SenderProgress):
        w.u8(PROGRESS).u32(msg.epoch).u64(msg.pad_position)
    else:
        reason = msg.reason.encode()[:200].decode(errors="ignore").encode()
        w.u8(BYE).u8(int(msg.failed)).var16(reason)
    return w.finish()


def _direction(r: Reader) -> Direction:
    value = r.u8("direction")
    if value > 1:
        raise MalformedMessage(f"bad direction {value}")
    return Direction(value)


def _decode_body(r: Reader, kind: int) -> ControlMessage:
    if kind == EPOCH_ANNOUNCE:
        return EpochAnnounce(r.u32("epoch"), r.uuids("key_ids", MAX_KEYS))
    if kind == EPOCH_READY:
        return EpochReady(r.u32("epoch"))
    if kind == PAD_ANNOUNCE:
        return PadAnnounce(_direction(r), r.u64("offset"), r.uuids("key_ids", MAX_KEYS))
    if kind == PAD_READY:
        return PadReady(_direction(r), r.u64("end"))
    if kind == PROGRESS:
        return SenderProgress(r.u32("epoch"), r.u64("pad_position"))
    if kind == BYE:
        failed = r.u8("failed")
        if failed > 1:
            raise MalformedMessage("bye failed flag must be 0 or 1")
        try:
            return Bye(printable(r.var16("reason", 200).decode(), 200), bool(failed))
        except UnicodeDecodeError as exc:
            raise MalformedMessage("bye reason is not UTF-8") from exc
    raise MalformedMessage(f"unknown control message type {kind}")


class ControlChannel:
    """Seals outgoing and opens incoming control messages; one key per direction (``bytearray``
    keys are the channel's: :meth:`close` zeroes them)."""

    def __init__(self, send_key: bytes | bytearray, recv_key: bytes | bytearray) -> None:
        self._send_key, self._recv_key = send_key, recv_key
        self._send_seq = 0
        self._recv_seq = 0

    def seal(self, msg: ControlMessage) -> bytes:
        body = _encode_body(msg)
        data = body[:1] + self._send_seq.to_bytes(4, "big") + body[1:]
        self._send_seq += 1
        return data + hmac.new(self._send_key, data, "sha256").digest()[:MAC_LEN]

    def open(self, data: bytes) -> ControlMessage:
        """Verify and parse; raises ControlRejected and leaves the sequence unchanged on error
        (ControlUnauthenticated when the message is not the peer's authentic next one)."""
        if not MAC_LEN + 5 <= len(data) <= MAX_CONTROL:
            raise ControlUnauthenticated(f"control message of {len(data)} bytes is out of bounds")
        body, mac = data[:-MAC_LEN], data[-MAC_LEN:]
        expect = hmac.new(self._recv_key, body, "sha256").digest()[:MAC_LEN]
        if not hmac.compare_digest(expect, mac):
            raise ControlUnauthenticated("control message authentication failed")
        r = Reader(body, "control message")
        kind = r.u8("type")
        seq = r.u32("seq")
        if seq != self._recv_seq:
            raise ControlUnauthenticated(
                f"control message out of sequence (got {seq}, want {self._recv_seq})"
            )
        try:
            msg = _decode_body(r, kind)
            r.end()
        except MalformedMessage as exc:
            raise ControlRejected(str(exc)) from exc
        self._recv_seq += 1
        return msg

    def close(self) -> None:
        for key in (self._send_key, self._recv_key):
            if isinstance(key, bytearray):
                erase(key)
        self._send_key = self._recv_key = b""
