"""ETSI GS QKD 014 V1.1.1 messages: strict, bounded parsers for requests and builders for replies,
and the one parser of a reply keyserver reads (the key container, :func:`parse_key_container`).

No I/O here. Every request parse failure raises :class:`EtsiError` with the HTTP status and the
error object (``message`` and optional ``details``) the KME sends back; a key container that is
not ETSI 014 raises :class:`KeyContainerError`. Every key is a :class:`~keyserver.etsi014.key.Key`.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from keyserver.etsi014.key import Key

MAX_BODY_BYTES = 256 * 1024
MAX_CONTAINER_BYTES = 4 * 1024 * 1024  # a reply read: 128 keys of 64 kbit in base64 are 1.4 MB

MSG_NOT_FOUND = "one or more keys specified are not found on KME"
MSG_EXT_MANDATORY = "not all extension_mandatory parameters are supported"
MSG_SIZE_MULTIPLE = "size shall be a multiple of 8"

_DECIMAL = re.compile(r"[0-9]{1,12}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_SAE_ID = re.compile(r"[A-Za-z0-9._:@-]{1,128}")


class EtsiError(Exception):
    """A request the KME refuses: HTTP status plus the ETSI error object."""

    def __init__(self, status: int, message: str, details: Sequence[Mapping[str, Any]] = ()):
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = [dict(d) for d in details]

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"message": self.message}
        if self.details:
            out["details"] = self.details
        return out


def bad_request(message: str, **detail: Any) -> EtsiError:
    return EtsiError(400, message, [detail] if detail else ())


@dataclass(frozen=True)
class Limits:
    """The KME's key-size and count limits (all sizes in bits), as reported by Get status."""

    key_size: int = 256
    min_key_size: int = 64
    max_key_size: int = 65536
    max_key_per_request: int = 128
    max_sae_id_count: int = 0

    def __post_init__(self) -> None:
        for name in ("key_size", "min_key_size", "max_key_size"):
            if getattr(self, name) % 8:
                raise ValueError(f"{name} must be a multiple of 8")
        if not 8 <= self.min_key_size <= self.key_size <= self.max_key_size:
            raise ValueError("need 8 <= min_key_size <= key_size <= max_key_size")
        if self.max_key_per_request < 1:
            raise ValueError("max_key_per_request must be >= 1")


@dataclass(frozen=True)
class KeyRequest:
    """A validated Get key request."""

    number: int
    size: int  # bits

    @property
    def size_bytes(self) -> int:
        return self.size // 8


def valid_sae_id(value: str) -> bool:
    return _SAE_ID.fullmatch(value) is not None


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise bad_request(f"duplicate field {k!r} in request body")
        out[k] = v
    return out


def parse_json_object(body: bytes, limit: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """Decode a bounded JSON object body (no duplicate fields)."""
    if len(body) > limit:
        raise bad_request(f"request body larger than {limit} bytes")
    try:
        obj = json.loads(body.decode("utf-8"), object_pairs_hook=_reject_duplicates)
    except EtsiError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise bad_request("request body is not valid UTF-8 JSON") from None
    if not isinstance(obj, dict):
        raise bad_request("request body must be a JSON object")
    return obj


def _int_field(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"{name} must be an integer", parameter=name)
    return value


def _check_request(number: int, size: int, limits: Limits) -> KeyRequest:
    if number < 1:
        raise bad_request("number must be at least 1", parameter="number")
    if number > limits.max_key_per_request:
        raise bad_request(
            f"number exceeds max_key_per_request ({limits.max_key_per_request})",
            parameter="number",
        )
    if size < limits.min_key_size or size > limits.max_key_size:
        raise bad_request(
            f"size must be between min_key_size ({limits.min_key_size}) and "
            f"max_key_size ({limits.max_key_size}) bits",
            parameter="size",
        )
    if size % 8:
        raise bad_request(MSG_SIZE_MULTIPLE, parameter="size")
    return KeyRequest(number, size)


_KEY_REQUEST_FIELDS = frozenset(
    {"number", "size", "additional_slave_SAE_IDs", "extension_mandatory", "extension_optional"}
)


def _extension_names(name: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(e, dict) for e in value):
        raise bad_request(f"{name} must be an array of objects", parameter=name)
    return [k for e in value for k in e]


def parse_key_request(body: bytes, limits: Limits) -> KeyRequest:
    """POST enc_keys body (an empty body means all defaults)."""
    obj = parse_json_object(body) if body.strip() else {}
    unknown = sorted(set(obj) - _KEY_REQUEST_FIELDS)
    if unknown:
        raise bad_request(f"unknown field {unknown[0]!r} in key request")
    number = _int_field("number", obj.get("number", 1))
    size = _int_field("size", obj.get("size", limits.key_size))
    extra = obj.get("additional_slave_SAE_IDs", [])
    if not isinstance(extra, list) or not all(isinstance(s, str) for s in extra):
        raise bad_request(
            "additional_slave_SAE_IDs must be an array of strings",
            parameter="additional_slave_SAE_IDs",
        )
    if len(extra) > limits.max_sae_id_count:
        raise bad_request(
            f"additional_slave_SAE_IDs has more than max_SAE_ID_count "
            f"({limits.max_sae_id_count}) entries: this KME does not deliver to multiple SAEs",
            parameter="additional_slave_SAE_IDs",
        )
    mandatory = _extension_names("extension_mandatory", obj.get("extension_mandatory", []))
    _extension_names("extension_optional", obj.get("extension_optional", []))  # ignored
    if mandatory:
        raise EtsiError(400, MSG_EXT_MANDATORY, [{"extension_mandatory_unsupported": mandatory}])
    return _check_request(number, size, limits)


def _single_query(query: Mapping[str, Sequence[str]], allowed: frozenset[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, values in query.items():
        if name not in allowed:
            raise bad_request(f"unknown query parameter {name!r}")
        if len(values) != 1:
            raise bad_request(f"query parameter {name!r} given more than once")
        out[name] = values[0]
    return out


def parse_key_request_query(query: Mapping[str, Sequence[str]], limits: Limits) -> KeyRequest:
    """GET enc_keys: only `number` and `size`, decimal integers."""
    q = _single_query(query, frozenset({"number", "size"}))

    def num(name: str, default: int) -> int:
        if name not in q:
            return default
        if not _DECIMAL.fullmatch(q[name]):
            raise bad_request(f"{name} must be a non-negative decimal integer", parameter=name)
        return int(q[name])

    return _check_request(num("number", 1), num("size", limits.key_size), limits)


def parse_key_id(value: Any) -> uuid.UUID:
    if not isinstance(value, str) or not _UUID.fullmatch(value):
        raise bad_request(
            "key_ID must be a UUID string (8-4-4-4-12 hex digits)", parameter="key_ID"
        )
    return uuid.UUID(value)


def _dedupe(ids: list[uuid.UUID]) -> list[uuid.UUID]:
    if len(set(ids)) != len(ids):
        raise bad_request("key_IDs lists the same key_ID more than once", parameter="key_IDs")
    return ids


def parse_key_ids(body: bytes, max_ids: int) -> list[uuid.UUID]:
    """POST dec_keys body: {"key_IDs": [{"key_ID": uuid, "key_ID_extension": {...}}, ...]}."""
    obj = parse_json_object(body)
    unknown = sorted(set(obj) - {"key_IDs", "key_IDs_extension"})
    if unknown:
        raise bad_request(f"unknown field {unknown[0]!r} in key IDs request")
    entries = obj.get("key_IDs")
    if not isinstance(entries, list) or not entries:
        raise bad_request("key_IDs must be a non-empty array", parameter="key_IDs")
    if len(entries) > max_ids:
        raise bad_request(
            f"key_IDs has more than max_key_per_request ({max_ids}) entries", parameter="key_IDs"
        )
    ids: list[uuid.UUID] = []
    for e in entries:
        if not isinstance(e, dict) or "key_ID" not in e or set(e) - {"key_ID", "key_ID_extension"}:
            raise bad_request(
                'each key_IDs entry must be an object {"key_ID": uuid}', parameter="key_IDs"
            )
        ids.append(parse_key_id(e["key_ID"]))
    return _dedupe(ids)


def parse_key_ids_query(query: Mapping[str, Sequence[str]]) -> list[uuid.UUID]:
    """GET dec_keys: exactly one `key_ID` query parameter."""
    q = _single_query(query, frozenset({"key_ID"}))
    if "key_ID" not in q:
        raise bad_request("GET dec_keys needs the key_ID query parameter", parameter="key_ID")
    return [parse_key_id(q["key_ID"])]


def key_container(keys: Sequence[Key]) -> dict[str, Any]:
    """The Key container of ETSI GS QKD 014 clause 6.3 (the reply to Get key and Get key with
    key IDs), as a JSON object; :func:`parse_key_container` reads it back."""
    return {
        "keys": [
            {"key_ID": str(k.key_id), "key": base64.b64encode(k.material).decode("ascii")}
            for k in keys
        ]
    }


def key_container_json(keys: Sequence[Key]) -> bytes:
    """:func:`key_container` as the UTF-8 JSON text ``json.dumps`` makes of it, written
    directly (a KME's reply to every key request): a key ID (8-4-4-4-12 hex digits) and
    standard base64 hold no character JSON escapes."""
    entries = ", ".join(
        f'{{"key_ID": "{k.key_id}", "key": "{base64.b64encode(k.material).decode("ascii")}"}}'
        for k in keys
    )
    return ('{"keys": [' + entries + "]}").encode("ascii")


class KeyContainerError(ValueError):
    """A reply that is not the ETSI 014 key container asked for (what is wrong, in one line)."""


_CONTAINER_FIELDS = frozenset({"keys", "key_container_extension"})
_KEY_FIELDS = frozenset({"key_ID", "key_ID_extension", "key", "key_extension"})
_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise KeyContainerError("key container has a member twice")
    return out


def parse_key_container(
    body: bytes, *, key_bytes: int | None, max_keys: int, limit: int = MAX_CONTAINER_BYTES
) -> list[Key]:
    """An ETSI GS QKD 014 Key container (clause 6.3), strictly: at most `limit` bytes of UTF-8
    JSON, one object with a ``keys`` array of 1..`max_keys` entries, each exactly a ``key_ID``
    (a UUID, 8-4-4-4-12 hex digits) and a ``key`` (padded standard base64 of `key_bytes` bytes,
    or of any non-empty length if None) besides the optional ``*_extension`` members, no
    ``key_ID`` twice and no member twice. Everything else raises :class:`KeyContainerError`.

    The one container parser of keyserver (a node reading its module's reply, ``bench pair``);
    :func:`key_container` builds what it reads."""
    if len(body) > limit:
        raise KeyContainerError(f"key container larger than {limit} bytes")
    try:
        obj = json.loads(body.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except KeyContainerError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise KeyContainerError("key container is not UTF-8 JSON") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("keys"), list):
        raise KeyContainerError("key container has no 'keys' array")
    if set(obj) - _CONTAINER_FIELDS:
        raise KeyContainerError(
            f"key container has unknown members {sorted(set(obj) - _CONTAINER_FIELDS)}"
        )
    entries = obj["keys"]
    if not 1 <= len(entries) <= max_keys:
        raise KeyContainerError(f"key container holds {len(entries)} keys, expected 1..{max_keys}")
    out: list[Key] = []
    for e in entries:
        if not isinstance(e, dict) or set(e) - _KEY_FIELDS:
            raise KeyContainerError("key container entry is not an object of key_ID and key")
        kid, key = e.get("key_ID"), e.get("key")
        if not isinstance(kid, str) or not _UUID.fullmatch(kid):
            raise KeyContainerError(
                "key container entry has no key_ID UUID (8-4-4-4-12 hex digits)"
            )
        if not isinstance(key, str) or not _BASE64.fullmatch(key):
            raise KeyContainerError(f"key {kid} is not padded standard base64")
        material = base64.b64decode(key)
        if not material or (key_bytes is not None and len(material) != key_bytes):
            raise KeyContainerError(f"key {kid} has {len(material)} bytes, expected {key_bytes}")
        out.append(Key(uuid.UUID(kid), bytearray(material)))
    if len({k.key_id for k in out}) != len(out):
        raise KeyContainerError("key container holds a key_ID twice")
    return out


@dataclass(frozen=True)
class Status:
    source_kme_id: str
    target_kme_id: str
    master_sae_id: str
    slave_sae_id: str
    stored_key_count: int
    max_key_count: int
    limits: Limits
    status_extension: Mapping[str, Any] | None = None

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "source_KME_ID": self.source_kme_id,
            "target_KME_ID": self.target_kme_id,
            "master_SAE_ID": self.master_sae_id,
            "slave_SAE_ID": self.slave_sae_id,
            "key_size": self.limits.key_size,
            "stored_key_count": self.stored_key_count,
            "max_key_count": self.max_key_count,
            "max_key_per_request": self.limits.max_key_per_request,
            "max_key_size": self.limits.max_key_size,
            "min_key_size": self.limits.min_key_size,
            "max_SAE_ID_count": self.limits.max_sae_id_count,
        }
        if self.status_extension is not None:
            out["status_extension"] = dict(self.status_extension)
        return out
