"""Signaling messages between two qphone terminals: schema and wire codec (sans-I/O).

Wire format: a 4-byte big-endian length N, then N bytes of UTF-8 JSON object::

    {"qphone": 1, "type": "offer" | "answer", "sdp": "v=0\\r\\n..."}
    {"qphone": 1, "type": "reject", "reason": "..."}

Parsing is strict and bounded: the length is checked against
:data:`MAX_MESSAGE_BYTES` before any body byte is read, unknown or missing keys,
wrong types, non-UTF-8, duplicate keys, over-long fields and an SDP that does
not start with ``v=0`` are all rejected with :class:`SignalingProtocolError`.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from enum import Enum
from typing import Any

PROTOCOL_VERSION = 1
HEADER_BYTES = 4
MAX_MESSAGE_BYTES = 64 * 1024
MAX_SDP_CHARS = 60 * 1024
MAX_REASON_CHARS = 500

_HEADER = struct.Struct(">I")


class SignalingProtocolError(ValueError):
    """The peer sent something that is not a valid qphone signaling message."""


class SignalKind(Enum):
    OFFER = "offer"
    ANSWER = "answer"
    REJECT = "reject"


@dataclass(frozen=True)
class SignalMessage:
    """One signaling message.  ``sdp`` is set for offer/answer, ``reason`` for reject."""

    kind: SignalKind
    sdp: str = ""
    reason: str = ""

    def __post_init__(self) -> None:
        if self.kind is SignalKind.REJECT:
            if self.sdp:
                raise SignalingProtocolError("a reject message carries no SDP")
            if len(self.reason) > MAX_REASON_CHARS:
                raise SignalingProtocolError(
                    f"reject reason longer than {MAX_REASON_CHARS} characters"
                )
        else:
            if self.reason:
                raise SignalingProtocolError(f"an {self.kind.value} message carries no reason")
            _check_sdp(self.sdp)


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
    else:
        obj["sdp"] = message.sdp
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
    if set(obj) != expected:
        extra = sorted(set(obj) - expected)
        missing = sorted(expected - set(obj))
        raise SignalingProtocolError(
            f"{kind.value} message has wrong fields (unexpected {extra}, missing {missing})"
        )
    value = obj[field_name]
    if not isinstance(value, str):
        raise SignalingProtocolError(f"field {field_name!r} must be a string")
    if kind is SignalKind.REJECT:
        return SignalMessage(kind, reason=value)
    return SignalMessage(kind, sdp=value)
