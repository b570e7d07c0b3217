"""Signaling messages between two qphone terminals: schema and wire codec (sans-I/O).

Wire format: a 4-byte big-endian length N, then N bytes of UTF-8 JSON object::

    {"qphone": 1, "type": "offer", "sdp": "v=0...", "from": "alice", "to": "bob", "mode": "aes"}
    {"qphone": 1, "type": "answer", "sdp": "v=0...", "from": "bob"}
    {"qphone": 1, "type": "reject", "reason": "...", "code": "busy", "from": "bob"}

``from`` and ``to`` are the SAE IDs of the caller's profile (who calls, whom it means to call)
and of the answerer's; ``mode`` is the mode the caller will propose; ``code`` says why a call is
refused (:class:`RejectCode`).  They are optional on the wire and **unauthenticated**: the
endpoint uses them only to refuse a call early with a message that names the mistake (busy,
wrong profile, mode), never to let a call proceed (the handshake authenticates the peer).

Parsing is strict and bounded: the length is checked against
:data:`MAX_MESSAGE_BYTES` before any body byte is read, unknown or missing keys,
wrong types, non-UTF-8, duplicate keys, over-long fields and an SDP that does
not start with ``v=0`` are all rejected with :class:`SignalingProtocolError`.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from enum import Enum
from typing import Any

PROTOCOL_VERSION = 1
HEADER_BYTES = 4
MAX_MESSAGE_BYTES = 64 * 1024
MAX_SDP_CHARS = 60 * 1024
MAX_REASON_CHARS = 500
MODES = ("aes", "otp")
_SAE_ID = re.compile(r"[A-Za-z0-9._:@-]{1,128}")

_HEADER = struct.Struct(">I")


class SignalingProtocolError(ValueError):
    """The peer sent something that is not a valid qphone signaling message."""


class SignalKind(Enum):
    OFFER = "offer"
    ANSWER = "answer"
    REJECT = "reject"


class RejectCode(Enum):
    """Why an answerer refuses a call."""

    REFUSED = "refused"  # anything else (e.g. an unusable offer)
    BUSY = "busy"  # it is in another call
    WRONG_PEER = "wrong-peer"  # the SAE IDs do not fit its profile (wrong profile or address)
    MODE = "mode"  # it accepts only the other mode


@dataclass(frozen=True)
class SignalMessage:
    """One signaling message.  ``sdp`` is set for offer/answer, ``reason`` and ``code`` for
    reject; ``sender`` (wire ``from``), ``recipient`` (``to``) and ``mode`` as described above."""

    kind: SignalKind
    sdp: str = ""
    reason: str = ""
    code: RejectCode | None = None
    sender: str = ""
    recipient: str = ""
    mode: str = ""

    def __post_init__(self) -> None:
        if self.kind is SignalKind.REJECT:
            if self.sdp:
                raise SignalingProtocolError("a reject message carries no SDP")
            if len(self.reason) > MAX_REASON_CHARS:
                raise SignalingProtocolError(
                    f"reject reason longer than {MAX_REASON_CHARS} characters"
                )
        else:
            if self.reason or self.code is not None:
                raise SignalingProtocolError(f"an {self.kind.value} message carries no reason")
            _check_sdp(self.sdp)
        if self.kind is not SignalKind.OFFER and (self.recipient or self.mode):
            raise SignalingProtocolError(f"an {self.kind.value} message names no callee or mode")
        for name, value in (("from", self.sender), ("to", self.recipient)):
            if value and not _SAE_ID.fullmatch(value):
                raise SignalingProtocolError(f"field {name!r} is not an SAE ID")
        if self.mode and self.mode not in MODES:
            raise SignalingProtocolError(f"field 'mode' must be one of {', '.join(MODES)}")


def _check_sdp(sdp: str) -> None:
    if len(sdp) > MAX_SDP_CHARS:
        raise SignalingProtocolError(f"SDP longer than {MAX_SDP_CHARS} characters")
    if not sdp.startswith("v=0\r\n") and not sdp.startswith("v=0\n"):
        raise SignalingProtocolError("SDP does not start with 'v=0'")
    if "\x00" in sdp:
        raise SignalingProtocolError("SDP contains a NUL character")


def encode_message(message: SignalMessage) -> bytes:
    """Length-prefixed JSON encoding of ``message``."""
    obj: dict[str, Any] = {"qphone": PROTOCOL_VERSION, "type": message.kind.value}
    if message.kind is SignalKind.REJECT:
        obj["reason"] = message.reason
        if message.code is not None:
            obj["code"] = message.code.value
    else:
        obj["sdp"] = message.sdp
    for key, value in (("from", message.sender), ("to", message.recipient), ("mode", message.mode)):
        if value:
            obj[key] = value
    body = json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    if len(body) > MAX_MESSAGE_BYTES:
        raise SignalingProtocolError(
            f"signaling message of {len(body)} bytes exceeds the limit of {MAX_MESSAGE_BYTES}"
        )
    return _HEADER.pack(len(body)) + body


def decode_length(header: bytes) -> int:
    """Body length announced by a 4-byte header; rejects oversized or empty bodies."""
    if len(header) != HEADER_BYTES:
        raise SignalingProtocolError(f"signaling header must be {HEADER_BYTES} bytes")
    (length,) = _HEADER.unpack(header)
    if length == 0:
        raise SignalingProtocolError("empty signaling message")
    if length > MAX_MESSAGE_BYTES:
        raise SignalingProtocolError(
            f"signaling message of {length} bytes exceeds the limit of {MAX_MESSAGE_BYTES} bytes"
            " (is the other side really qphone?)"
        )
    return int(length)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise SignalingProtocolError(f"duplicate key {key!r} in signaling message")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise SignalingProtocolError(f"non-standard JSON constant {name} in signaling message")


def decode_body(body: bytes) -> SignalMessage:
    """Parse and validate one message body (without the length header)."""
    if len(body) > MAX_MESSAGE_BYTES:
        raise SignalingProtocolError(
            f"signaling message of {len(body)} bytes exceeds the limit of {MAX_MESSAGE_BYTES}"
        )
    try:
        text = body.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise SignalingProtocolError("signaling message is not UTF-8 text") from exc
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except SignalingProtocolError:
        raise
    except (ValueError, RecursionError) as exc:
        raise SignalingProtocolError(f"signaling message is not valid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise SignalingProtocolError("signaling message is not a JSON object")
    version = obj.get("qphone")
    if type(version) is not int:
        raise SignalingProtocolError("signaling message lacks the integer 'qphone' version field")
    if version != PROTOCOL_VERSION:
        raise SignalingProtocolError(
            f"peer speaks signaling version {version}, this qphone speaks {PROTOCOL_VERSION}:"
            " upgrade the older side"
        )
    kind_text = obj.get("type")
    try:
        kind = SignalKind(kind_text)
    except ValueError as exc:
        raise SignalingProtocolError(f"unknown signaling message type {kind_text!r}") from exc
    field_name = "reason" if kind is SignalKind.REJECT else "sdp"
    expected = {"qphone", "type", field_name}
    optional = _OPTIONAL[kind]
    if not expected <= set(obj) <= expected | optional:
        extra = sorted(set(obj) - expected - optional)
        missing = sorted(expected - set(obj))
        raise SignalingProtocolError(
            f"{kind.value} message has wrong fields (unexpected {extra}, missing {missing})"
        )
    for name in (field_name, *optional):
        if name in obj and not isinstance(obj[name], str):
            raise SignalingProtocolError(f"field {name!r} must be a string")
    extra_fields = {
        "sender": obj.get("from", ""),
        "recipient": obj.get("to", ""),
        "mode": obj.get("mode", ""),
    }
    if kind is SignalKind.REJECT:
        try:
            code = RejectCode(obj["code"]) if "code" in obj else None
        except ValueError:
            code = RejectCode.REFUSED  # a code this version does not know
        return SignalMessage(kind, reason=obj[field_name], code=code, **extra_fields)
    return SignalMessage(kind, sdp=obj[field_name], **extra_fields)


_OPTIONAL = {
    SignalKind.OFFER: {"from", "to", "mode"},
    SignalKind.ANSWER: {"from"},
    SignalKind.REJECT: {"code", "from"},
}
