"""Key relay between trusted nodes: hop message, one-time pad and one-time MAC (sans-I/O).

A relay carries ``number`` end-to-end keys of ``size`` bytes from the initiator node (the
master SAE's) to the target node (the slave SAE's) along a route of trusted nodes, one **hop**
per QKD link, as in ETSI GS QKD 020 (``POST /kmapi/v1/ext_keys``, then an ack to the initiator's
``ack_callback_url``; ``/ext_keys/void``):

* **Hop 1** (initiator -> route[1]): the end-to-end keys *are* link key: a slice of the
  initiator's stream on the first link. The message names the slice (start, length) and carries
  no key value at all.
* **Hop i > 1**: the sender XORs the keys with a fresh slice of its stream on the next link
  (one-time pad: one end-to-end bit costs one link bit per hop) and sends the ciphertext.
* Every hop message is authenticated information-theoretically: a **one-time Poly1305 key**
  (32 bytes, the 32 link-key bytes right after the pad slice) tags the canonical encoding of the
  whole message (Wegman-Carter: forgery probability about 8 * ceil(L/16) / 2^106 for an L-byte
  message). The receiver consumes the slice in the transaction that accepts the message, so a
  replayed message finds its bytes gone and is refused.
* **Multipath**: the keys are split into ``legs`` XOR shares, each relayed over its own route
  (node-disjoint, so each first link differs); every share is link key of its first hop, and the
  target XORs all shares. A node on one route sees one share, which is independent of the key.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.poly1305 import Poly1305

MAC_KEY_BYTES = 32
TAG_BYTES = 16
MAX_ROUTE = 64
MAX_KEYS = 1024
MAX_KEY_BYTES = 8192
_NAME = re.compile(r"[A-Za-z0-9._:@-]{1,128}")


class RelayFormatError(ValueError):
    """A relay message does not parse or breaks a bound."""


class AckStatus(Enum):
    """ETSI GS QKD 020 ack statuses."""

    RELAYED = "relayed"
    VOIDED = "voided"
    FAILED = "failed"
    KEY_NOT_PRESENT = "key not present"


@dataclass(frozen=True)
class RelayHeader:
    relay_id: uuid.UUID
    key_ids: tuple[uuid.UUID, ...]
    size: int  # bytes per key
    initiator_node: str
    target_node: str
    initiator_sae: str
    target_sae: str
    route: tuple[str, ...]  # initiator ... target
    hop: int  # index in `route` of this message's receiver (1 .. len(route) - 1)
    leg: int  # 0 .. legs - 1
    legs: int
    link: str  # the link between route[hop - 1] and route[hop]
    pad_start: int  # slice of route[hop - 1]'s stream on `link`: pad, then the MAC key
    deadline_ms: int  # unix time in ms after which nobody forwards or accepts it
    ack_url: str

    @property
    def sender(self) -> str:
        return self.route[self.hop - 1]

    @property
    def receiver(self) -> str:
        return self.route[self.hop]

    @property
    def is_last(self) -> bool:
        return self.hop == len(self.route) - 1

    @property
    def total(self) -> int:
        return self.size * len(self.key_ids)

    @property
    def slice_length(self) -> int:
        """Link-key bytes this hop spends: the pad and the one-time MAC key."""
        return self.total + MAC_KEY_BYTES

    def next_hop(self, link: str, pad_start: int) -> RelayHeader:
        return replace(self, hop=self.hop + 1, link=link, pad_start=pad_start)


@dataclass(frozen=True)
class HopMessage:
    header: RelayHeader
    values: tuple[bytes, ...] | None  # None on hop 1 (the keys are the link key slice)
    tag: bytes


def xor(a: bytes, b: bytes) -> bytes:
    if len(a) != len(b):
        raise ValueError("xor of unequal lengths")
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def header_obj(h: RelayHeader) -> dict[str, Any]:
    return {
        "relay_id": str(h.relay_id),
        "initiator_node": h.initiator_node,
        "target_node": h.target_node,
        "route": list(h.route),
        "hop": h.hop,
        "leg": h.leg,
        "legs": h.legs,
        "link": h.link,
        "pad_start": h.pad_start,
        "size": h.size,
        "deadline_ms": h.deadline_ms,
    }


def encode_hop(m: HopMessage) -> dict[str, Any]:
    """The ETSI GS QKD 020 style ``ext_keys`` body."""
    h = m.header
    keys = [
        {"key_id": str(kid), "value": None if m.values is None else _b64(m.values[i])}
        for i, kid in enumerate(h.key_ids)
    ]
    return {
        "keys": keys,
        "initiator_sae_id": h.initiator_sae,
        "target_sae_ids": [h.target_sae],
        "ack_callback_url": h.ack_url,
        "extension": {"qphone_relay": header_obj(h), "mac": _b64(m.tag)},
    }


def mac_input(h: RelayHeader, values: tuple[bytes, ...] | None) -> bytes:
    """The canonical bytes every hop MAC covers (all header fields and all values)."""
    body = {
        "h": header_obj(h),
        "keys": [str(k) for k in h.key_ids],
        "sae": [h.initiator_sae, h.target_sae],
        "ack": h.ack_url,
        "values": None if values is None else [_b64(v) for v in values],
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def seal(h: RelayHeader, keys: Sequence[bytes] | None, link_slice: bytes) -> HopMessage:
    """Build the hop message from `link_slice` (pad + MAC key) of the sender's stream."""
    if len(link_slice) != h.slice_length:
        raise ValueError("link slice has the wrong length")
    pad, mac_key = link_slice[: h.total], link_slice[h.total :]
    values: tuple[bytes, ...] | None
    if h.hop == 1:
        if keys is not None:
            raise ValueError("hop 1 carries no key values: the keys are the link key slice")
        values = None
    else:
        if keys is None or len(keys) != len(h.key_ids) or any(len(k) != h.size for k in keys):
            raise ValueError("keys do not match the header")
        values = tuple(xor(k, pad[i * h.size : (i + 1) * h.size]) for i, k in enumerate(keys))
    return HopMessage(h, values, Poly1305.generate_tag(mac_key, mac_input(h, values)))


def hop1_keys(h: RelayHeader, link_slice: bytes) -> list[bytes]:
    """The keys (or this leg's shares) of a hop-1 slice, as the initiator carved them."""
    return [link_slice[i * h.size : (i + 1) * h.size] for i in range(len(h.key_ids))]


def open_hop(m: HopMessage, link_slice: bytes) -> list[bytes]:
    """Verify the MAC (constant time) and recover the keys; raises RelayFormatError if forged."""
    h = m.header
    if len(link_slice) != h.slice_length:
        raise ValueError("link slice has the wrong length")
    pad, mac_key = link_slice[: h.total], link_slice[h.total :]
    try:
        Poly1305.verify_tag(mac_key, mac_input(h, m.values), m.tag)
    except InvalidSignature:
        raise RelayFormatError("hop message MAC does not verify") from None
    if m.values is None:
        return hop1_keys(h, link_slice)
    return [xor(v, pad[i * h.size : (i + 1) * h.size]) for i, v in enumerate(m.values)]


def combine_shares(shares: Sequence[Sequence[bytes]]) -> list[bytes]:
    """XOR the legs' shares key by key."""
    out = list(shares[0])
    for leg in shares[1:]:
        out = [xor(a, b) for a, b in zip(out, leg, strict=True)]
    return out


# -- strict decoding -------------------------------------------------------------------------------
def _name(v: Any, what: str) -> str:
    if not isinstance(v, str) or not _NAME.fullmatch(v):
        raise RelayFormatError(f"{what} must be an ID string")
    return v


def _int(v: Any, what: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise RelayFormatError(f"{what} must be an integer within {lo}..{hi}")
    return v


def _uuid(v: Any, what: str) -> uuid.UUID:
    if not isinstance(v, str) or len(v) != 36:
        raise RelayFormatError(f"{what} must be a UUID string")
    try:
        return uuid.UUID(v)
    except ValueError:
        raise RelayFormatError(f"{what} must be a UUID string") from None


def _bytes(v: Any, what: str, n: int) -> bytes:
    if not isinstance(v, str) or len(v) > 4 * (n + 2) // 3 + 4:
        raise RelayFormatError(f"{what} must be base64 of {n} bytes")
    try:
        b = base64.b64decode(v, validate=True)
    except ValueError:  # binascii.Error, or a character outside ASCII
        raise RelayFormatError(f"{what} must be base64 of {n} bytes") from None
    if len(b) != n:
        raise RelayFormatError(f"{what} must be base64 of {n} bytes")
    return b


def _exact(obj: Any, fields: set[str], what: str) -> dict[str, Any]:
    if not isinstance(obj, dict) or set(obj) != fields:
        raise RelayFormatError(f"{what} must be an object with exactly {sorted(fields)}")
    return obj


_HEADER_FIELDS = {
    "relay_id",
    "initiator_node",
    "target_node",
    "route",
    "hop",
    "leg",
    "legs",
    "link",
    "pad_start",
    "size",
    "deadline_ms",
}


def decode_hop(obj: Any) -> HopMessage:
    body = _exact(
        obj,
        {"keys", "initiator_sae_id", "target_sae_ids", "ack_callback_url", "extension"},
        "ext_keys body",
    )
    ext = _exact(body["extension"], {"qphone_relay", "mac"}, "extension")
    hd = _exact(ext["qphone_relay"], _HEADER_FIELDS, "extension.qphone_relay")
    route_raw = hd["route"]
    if not isinstance(route_raw, list) or not 2 <= len(route_raw) <= MAX_ROUTE:
        raise RelayFormatError(f"route must be a list of 2..{MAX_ROUTE} node IDs")
    route = tuple(_name(r, "route entry") for r in route_raw)
    if len(set(route)) != len(route):
        raise RelayFormatError("route visits a node twice")
    targets = body["target_sae_ids"]
    if not isinstance(targets, list) or len(targets) != 1:
        raise RelayFormatError("target_sae_ids must list exactly one SAE")
    keys = body["keys"]
    if not isinstance(keys, list) or not 1 <= len(keys) <= MAX_KEYS:
        raise RelayFormatError(f"keys must be a list of 1..{MAX_KEYS} entries")
    ack = body["ack_callback_url"]
    if not isinstance(ack, str) or not ack.startswith("https://") or len(ack) > 300:
        raise RelayFormatError("ack_callback_url must be an https:// URL")
    legs = _int(hd["legs"], "legs", 1, 8)
    size = _int(hd["size"], "size", 1, MAX_KEY_BYTES)
    h = RelayHeader(
        relay_id=_uuid(hd["relay_id"], "relay_id"),
        key_ids=tuple(
            _uuid(_exact(k, {"key_id", "value"}, "keys entry")["key_id"], "key_id") for k in keys
        ),
        size=size,
        initiator_node=_name(hd["initiator_node"], "initiator_node"),
        target_node=_name(hd["target_node"], "target_node"),
        initiator_sae=_name(body["initiator_sae_id"], "initiator_sae_id"),
        target_sae=_name(targets[0], "target_sae_ids"),
        route=route,
        hop=_int(hd["hop"], "hop", 1, len(route) - 1),
        leg=_int(hd["leg"], "leg", 0, legs - 1),
        legs=legs,
        link=_name(hd["link"], "link"),
        pad_start=_int(hd["pad_start"], "pad_start", 0, 2**62),
        deadline_ms=_int(hd["deadline_ms"], "deadline_ms", 0, 2**53),
        ack_url=ack,
    )
    if len(set(h.key_ids)) != len(h.key_ids):
        raise RelayFormatError("keys lists a key_id twice")
    if (h.route[0], h.route[-1]) != (h.initiator_node, h.target_node):
        raise RelayFormatError("route must run from initiator_node to target_node")
    raw_values = [k["value"] for k in keys]
    values: tuple[bytes, ...] | None
    if h.hop == 1:
        if any(v is not None for v in raw_values):
            raise RelayFormatError("hop 1 carries no key values")
        values = None
    else:
        values = tuple(_bytes(v, "key value", size) for v in raw_values)
    return HopMessage(h, values, _bytes(ext["mac"], "mac", TAG_BYTES))


@dataclass(frozen=True)
class Ack:
    relay_id: uuid.UUID
    key_ids: tuple[uuid.UUID, ...]
    status: AckStatus
    reason: str = ""
    sender: str = ""


def encode_ack(a: Ack) -> dict[str, Any]:
    return {
        "key_ids": [str(k) for k in a.key_ids],
        "status": a.status.value,
        "extension": {"relay_id": str(a.relay_id), "reason": a.reason[:300]},
    }


def decode_ack(obj: Any) -> Ack:
    body = _exact(obj, {"key_ids", "status", "extension"}, "ack body")
    ext = _exact(body["extension"], {"relay_id", "reason"}, "ack extension")
    ids = body["key_ids"]
    if not isinstance(ids, list) or len(ids) > MAX_KEYS:
        raise RelayFormatError("key_ids must be a list")
    try:
        status = AckStatus(body["status"])
    except ValueError:
        raise RelayFormatError(
            "status must be one of " + ", ".join(s.value for s in AckStatus)
        ) from None
    reason = ext["reason"]
    if not isinstance(reason, str) or len(reason) > 300:
        raise RelayFormatError("reason must be a short string")
    return Ack(
        _uuid(ext["relay_id"], "relay_id"), tuple(_uuid(k, "key_id") for k in ids), status, reason
    )


@dataclass(frozen=True)
class Void:
    relay_id: uuid.UUID
    key_ids: tuple[uuid.UUID, ...]
    until_ms: int  # keep the tombstone this long (the relay's deadline plus a margin)


def encode_void(v: Void) -> dict[str, Any]:
    return {
        "key_ids": [str(k) for k in v.key_ids],
        "extension": {"relay_id": str(v.relay_id), "until_ms": v.until_ms},
    }


def decode_void(obj: Any) -> Void:
    body = _exact(obj, {"key_ids", "extension"}, "void body")
    ext = _exact(body["extension"], {"relay_id", "until_ms"}, "void extension")
    ids = body["key_ids"]
    if not isinstance(ids, list) or len(ids) > MAX_KEYS:
        raise RelayFormatError("key_ids must be a list")
    return Void(
        _uuid(ext["relay_id"], "relay_id"),
        tuple(_uuid(k, "key_id") for k in ids),
        _int(ext["until_ms"], "until_ms", 0, 2**53),
    )
