"""Async ETSI GS QKD 014 client (SAE side) on aiohttp: mutual TLS, keep-alive, timeouts, errors.

Works against any ETSI 014 KME (``qkd-keyserver`` or a vendor's). Uses the POST forms of Get key
and Get key with key IDs, reads at most :data:`MAX_REPLY_BYTES` of a reply, parses every key
container strictly (:func:`parse_key_container`: its fields, the count, the IDs, the sizes, the
base64) and maps failures to:

* :class:`KmeUnavailable` - network/TLS failure, timeout, 503 (retry later)
* :class:`KmeOutOfKeys` - the KME has not enough key material for the request now
  (:class:`KmeNoRoute`: a KMS network has no route with good key to the peer's node now;
  :class:`KmeRelayFailed`: a relay failed mid-way and was voided), all retried for a while
* :class:`KmeRejected` - 400/401: the request or the caller's certificate was refused
* :class:`KmeEavesdropperAlarm` - the QKD link discards its key blocks (error rate too high)
* :class:`KmeProtocolError` - the KME answered something that is not ETSI 014

Keys are fetched ahead of need by the endpoint's key supply (:mod:`qphone.endpoint.keysupply`).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import re
import ssl
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp
import yarl

from qphone.config.profile import Profile
from qphone.core.qkd import QkdKey

# ETSI GS QKD 014 defines no error codes. qkd-keyserver puts a ``reason`` in the error's
# details (out_of_keys, no_route); for other KMEs the message text is all there is, so only then
# is it matched against the usual wordings of "out of key".
_OUT_OF_KEYS = re.compile(
    r"not enough|insufficient|exhaust|no (more )?keys?|out of keys|keys? (are )?not available",
    re.I,
)


class KmeError(Exception):
    """Base class of KME client errors."""


class KmeUnavailable(KmeError):
    """The KME cannot be reached or answered 503; nothing was delivered."""


class KmeOutOfKeys(KmeError):
    """The KME has not enough key material for this request right now."""


class KmeNoRoute(KmeOutOfKeys):
    """No route of trusted nodes with good key reaches the peer's KME now (links broken or
    eavesdropped); like running out of key it may pass, so it is retried as that is."""


class KmeRelayFailed(KmeOutOfKeys):
    """A relay across the KMS network failed (a node or link on the route went away mid-way);
    its keys were voided at both ends and a new request may take another route: retried."""


class KmeRejected(KmeError):
    """The KME refused the request (400) or the caller (401)."""

    def __init__(self, status: int, message: str, hint: str = "") -> None:
        super().__init__(f"KME answered {status}: {message}" + (f" ({hint})" if hint else ""))
        self.status = status
        self.message = message


class KmeEavesdropperAlarm(KmeError):
    """The QKD link discards its key blocks because the error rate says someone may be listening."""


class KmeProtocolError(KmeError):
    """The KME's reply is not valid ETSI GS QKD 014."""


class KmeReusedKey(KmeError):
    """The KME served a key ID this terminal has used before (qphone.config.usedkeys): the KME is
    faulty, and none of the keys of that reply is used (a reused key would reuse a pad)."""

    def __init__(self, message: str, key_id: uuid.UUID) -> None:
        super().__init__(message)
        self.key_id = key_id


@dataclass(frozen=True)
class KmeStatus:
    """ETSI 014 Status (sizes in bits)."""

    source_kme_id: str
    target_kme_id: str
    master_sae_id: str
    slave_sae_id: str
    key_size: int
    stored_key_count: int
    max_key_count: int
    max_key_per_request: int
    max_key_size: int
    min_key_size: int
    max_sae_id_count: int
    status_extension: dict[str, Any] | None = field(default=None, compare=False)

    @property
    def link(self) -> dict[str, Any]:
        """The qkd-keyserver link statistics (empty for KMEs that do not report them)."""
        ext = self.status_extension or {}
        link = ext.get("qkd_link")
        return link if isinstance(link, dict) else {}

    @property
    def eavesdropper_alarm(self) -> bool:
        return self.link.get("eavesdropper_alarm") is True


_STATUS_STR = ("source_KME_ID", "target_KME_ID", "master_SAE_ID", "slave_SAE_ID")
_STATUS_INT = (
    "key_size",
    "stored_key_count",
    "max_key_count",
    "max_key_per_request",
    "max_key_size",
    "min_key_size",
    "max_SAE_ID_count",
)


def _parse_status(obj: Any) -> KmeStatus:
    if not isinstance(obj, dict):
        raise KmeProtocolError("status reply is not a JSON object")
    for k in _STATUS_STR:
        if not isinstance(obj.get(k), str):
            raise KmeProtocolError(f"status reply: {k} missing or not a string")
    for k in _STATUS_INT:
        v = obj.get(k)
        if isinstance(v, bool) or not isinstance(v, int):
            raise KmeProtocolError(f"status reply: {k} missing or not an integer")
    ext = obj.get("status_extension")
    if ext is not None and not isinstance(ext, dict):
        raise KmeProtocolError("status reply: status_extension is not an object")
    return KmeStatus(
        source_kme_id=obj["source_KME_ID"],
        target_kme_id=obj["target_KME_ID"],
        master_sae_id=obj["master_SAE_ID"],
        slave_sae_id=obj["slave_SAE_ID"],
        key_size=obj["key_size"],
        stored_key_count=obj["stored_key_count"],
        max_key_count=obj["max_key_count"],
        max_key_per_request=obj["max_key_per_request"],
        max_key_size=obj["max_key_size"],
        min_key_size=obj["min_key_size"],
        max_sae_id_count=obj["max_SAE_ID_count"],
        status_extension=ext,
    )


MAX_REPLY_BYTES = 4 * 1024 * 1024  # the most of a KME reply read: 128 keys of 64 kbit are 1.4 MB
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_CONTAINER_FIELDS = frozenset({"keys", "key_container_extension"})
_KEY_FIELDS = frozenset({"key_ID", "key_ID_extension", "key", "key_extension"})


def parse_key_container(obj: Any, *, key_bytes: int | None, max_keys: int) -> list[QkdKey]:
    """An ETSI GS QKD 014 Key container (clause 6.3), strictly: a JSON object with a ``keys``
    array of 1..`max_keys` objects, each a ``key_ID`` (UUID, 8-4-4-4-12 hex digits) and a
    ``key`` (standard base64 of `key_bytes` bytes, or of any non-empty length if None), no
    key_ID twice, and no members but those clause 6.3 names (the ``*_extension`` ones ignored).

    qkd-keyserver builds containers in ``keyserver/etsi014/messages.py``; qphone parses them here
    and never imports keyserver (docs/architecture.md, "One ETSI 014 parser per product")."""
    if not isinstance(obj, dict) or not isinstance(obj.get("keys"), list):
        raise KmeProtocolError("key container reply has no 'keys' array")
    if set(obj) - _CONTAINER_FIELDS:
        raise KmeProtocolError(
            f"key container has unknown members {sorted(set(obj) - _CONTAINER_FIELDS)}"
        )
    entries = obj["keys"]
    if not 1 <= len(entries) <= max_keys:
        raise KmeProtocolError(f"key container holds {len(entries)} keys, expected 1..{max_keys}")
    out: list[QkdKey] = []
    for entry in entries:
        if not isinstance(entry, dict) or set(entry) - _KEY_FIELDS:
            raise KmeProtocolError("key container entry is not an object of key_ID and key")
        kid, key = entry.get("key_ID"), entry.get("key")
        if not isinstance(kid, str) or not isinstance(key, str):
            raise KmeProtocolError("key entry lacks key_ID or key strings")
        if not _UUID.fullmatch(kid):
            raise KmeProtocolError("key entry has a malformed key_ID (not a UUID)")
        key_id = uuid.UUID(kid)
        try:
            material = base64.b64decode(key, validate=True)
        except (ValueError, binascii.Error):
            raise KmeProtocolError(f"key {key_id} is not base64") from None
        if not material or (key_bytes is not None and len(material) != key_bytes):
            raise KmeProtocolError(f"key {key_id} has {len(material)} bytes, expected {key_bytes}")
        out.append(QkdKey(key_id, material))
    if len({k.key_id for k in out}) != len(out):
        raise KmeProtocolError("KME delivered the same key_ID twice")
    return out


def _error_message(body: bytes, reason: str) -> tuple[str, list[Any]]:
    """The message and details of a KME's error reply (ETSI 014 clause 6.4), or its text."""
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        return body[:200].decode("utf-8", "replace") or reason, []
    if isinstance(obj, dict):
        details = obj.get("details")
        return str(obj.get("message", "")), details if isinstance(details, list) else []
    return str(obj)[:200], []


async def _read_bounded(content: aiohttp.StreamReader) -> bytes | None:
    """A reply's body, or None if it is longer than :data:`MAX_REPLY_BYTES`."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_REPLY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


KNOWN_REASONS = frozenset(
    {"out_of_keys", "no_route", "relay_failed"}
)  # what qkd-keyserver puts in details


def _details_reason(details: list[Any]) -> str | None:
    """The ``reason`` a qkd-keyserver KME gave in an error's details (None: none given)."""
    for d in details:
        if isinstance(d, dict) and isinstance(d.get("reason"), str):
            return str(d["reason"])
    return None


def _details_alarm(details: list[Any]) -> bool:
    for d in details:
        if isinstance(d, dict):
            link = d.get("qkd_link")
            if isinstance(link, dict) and link.get("eavesdropper_alarm") is True:
                return True
    return False


_ALARM_HINT = (
    "the QKD link is discarding key blocks because its error rate is above the abort threshold "
    "(possible eavesdropper); no new QKD keys will come until the link is checked - "
    "fall back to calls without QKD or fix the link"
)


def kme_error(url: str, status: int, message: str, details: list[Any]) -> KmeError:
    """The typed error for a KME's non-200 answer (its status, message and details).

    An eavesdropper alarm counts when the KME says there is no route (or gives no reason):
    a shortage on a good route that merely lies near an alarmed link is still a shortage."""
    reason = _details_reason(details)
    if reason not in KNOWN_REASONS:
        reason = None  # a vendor's own word: fall back to the message
    if _details_alarm(details) and reason in (None, "no_route"):
        return KmeEavesdropperAlarm(f"KME at {url}: {message}; {_ALARM_HINT}")
    if status == 503 and reason == "no_route":
        return KmeNoRoute(
            f"KME at {url}: {message} - the network is routing around broken or "
            "eavesdropped links: retry later, or look at `qkd-keyserver network status`"
        )
    if status == 503 and reason == "relay_failed":
        return KmeRelayFailed(
            f"KME at {url}: {message} - no key was delivered (voided at both ends); retry"
        )
    out_of_keys = (
        reason == "out_of_keys" if reason is not None else bool(_OUT_OF_KEYS.search(message))
    )
    if status in (400, 503) and out_of_keys:
        return KmeOutOfKeys(
            f"KME at {url}: {message} - wait for the QKD link to produce key, ask for "
            "fewer or smaller keys, or check the link's key rate (status)"
        )
    if status == 401:
        return KmeRejected(
            401,
            message,
            "check [kme] client_cert/client_key are this SAE's certificate, "
            "signed by the KME's CA, and that the SAE IDs in the request are right",
        )
    if status == 400:
        return KmeRejected(400, message, "the request does not fit the KME (see status)")
    if status >= 500:
        return KmeUnavailable(f"KME at {url} answered {status}: {message}; retry later")
    return KmeProtocolError(f"KME at {url} answered {status}: {message}")


class KmeClient:
    """ETSI GS QKD 014 client for one SAE talking to its local KME."""

    def __init__(
        self,
        url: str,
        *,
        ca_cert: Path,
        client_cert: Path,
        client_key: Path,
        timeout: float = 5.0,
        max_connections: int = 4,
    ) -> None:
        self.url = url.rstrip("/")
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_cert))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(client_cert, client_key)
        except (OSError, ssl.SSLError) as e:
            raise KmeRejected(
                0,
                f"cannot load client certificate {client_cert} / key {client_key}: {e}",
                "fix [kme] client_cert and client_key in the profile",
            ) from None
        self._ssl = ctx
        # per phase: a connection within `timeout` (its TCP connect within 3 s), each read too
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=timeout, sock_connect=min(timeout, 3.0), sock_read=timeout
        )
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None  # made on first use, in the loop
        self._closed = False

    @classmethod
    def from_profile(cls, profile: Profile, **kw: Any) -> KmeClient:
        return cls(
            profile.kme_url,
            ca_cert=profile.ca_cert,
            client_cert=profile.client_cert,
            client_key=profile.client_key,
            **kw,
        )

    async def __aenter__(self) -> KmeClient:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()

    # -- transport -------------------------------------------------------------------------------
    def _http(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("the KME client has been closed")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=self._max_connections),
                timeout=self._timeout,
                trust_env=False,
            )
        return self._session

    async def _request(self, method: str, path: str, body: Any = None) -> Any:
        url = yarl.URL(self.url + path, encoded=True)  # the SAE ID is quoted already
        try:
            async with self._http().request(method, url, json=body) as resp:
                status, reason = resp.status, resp.reason or ""
                data = await _read_bounded(resp.content)
        except TimeoutError as e:  # aiohttp's connect and read timeouts are TimeoutErrors
            raise KmeUnavailable(
                f"KME at {self.url} timed out ({type(e).__name__}): check the KME is running "
                "and reachable"
            ) from None
        except (aiohttp.ClientError, ssl.SSLError, OSError) as e:
            raise KmeUnavailable(
                f"KME at {self.url} unreachable ({type(e).__name__}: {e}): check the KME is "
                "running, the profile's [kme] url, and that [kme] ca_cert signed the KME's "
                "certificate"
            ) from None
        if data is None:
            raise KmeProtocolError(
                f"KME at {self.url} answered {status} with more than {MAX_REPLY_BYTES} bytes"
            )
        if status == 200:
            try:
                return json.loads(data)
            except (ValueError, RecursionError):
                raise KmeProtocolError(f"KME at {self.url} answered 200 without JSON") from None
        message, details = _error_message(data, reason)
        raise kme_error(self.url, status, message, details)

    @staticmethod
    def _sae(sae_id: str) -> str:
        return quote(sae_id, safe="")

    # -- the three ETSI 014 calls ----------------------------------------------------------------
    async def status(self, slave_sae_id: str) -> KmeStatus:
        return _parse_status(
            await self._request("GET", f"/api/v1/keys/{self._sae(slave_sae_id)}/status")
        )

    async def enc_keys(
        self, slave_sae_id: str, number: int = 1, size_bits: int | None = None
    ) -> list[QkdKey]:
        """Get key: `number` new keys of `size_bits` (KME default if None) shared with the slave."""
        if number < 1:
            raise ValueError("number must be >= 1")
        if size_bits is not None and (size_bits <= 0 or size_bits % 8):
            raise ValueError("size_bits must be a positive multiple of 8")
        body: dict[str, Any] = {"number": number}
        if size_bits is not None:
            body["size"] = size_bits
        path = f"/api/v1/keys/{self._sae(slave_sae_id)}/enc_keys"
        try:
            obj = await self._request("POST", path, body)
        except KmeOutOfKeys:
            alarm = False
            with contextlib.suppress(KmeError):  # the status is a hint: its failure changes nothing
                alarm = (await self.status(slave_sae_id)).eavesdropper_alarm
            if alarm:
                raise KmeEavesdropperAlarm(f"KME at {self.url}: {_ALARM_HINT}") from None
            raise
        keys = parse_key_container(
            obj, key_bytes=None if size_bits is None else size_bits // 8, max_keys=number
        )
        if len(keys) != number:
            raise KmeProtocolError(f"asked for {number} keys, KME delivered {len(keys)}")
        return keys

    async def dec_keys(self, master_sae_id: str, key_ids: Sequence[uuid.UUID]) -> list[QkdKey]:
        """Get key with key IDs: the keys the master SAE got, in the order of `key_ids`."""
        if not key_ids:
            raise ValueError("key_ids must not be empty")
        body = {"key_IDs": [{"key_ID": str(k)} for k in key_ids]}
        obj = await self._request("POST", f"/api/v1/keys/{self._sae(master_sae_id)}/dec_keys", body)
        got = parse_key_container(obj, key_bytes=None, max_keys=len(key_ids))
        keys = {k.key_id: k for k in got}
        if set(keys) != set(key_ids) or len(keys) != len(key_ids):
            raise KmeProtocolError("KME returned other key IDs than requested")
        return [keys[k] for k in key_ids]
