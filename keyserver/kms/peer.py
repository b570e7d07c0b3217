"""The authenticated classical channel between the two KMEs of a link.

Transport: HTTPS with mutual TLS, both ends presenting their KME certificate (same CA as the SAEs).
The server side admits only the configured peer KME's certificate CN on ``/link/v1/*``; the client
side checks the server's certificate CN is the configured peer KME ID (in the TLS handshake, see
``keyserver.pki.tls.client_context(expect_cn=...)``). Messages are JSON:

* ``POST /link/v1/segments``
  ``{"segments": [{"seq", "owner", "material"(base64)}], "stats": {...}}``
  -> ``{"held_up_to": seq}`` (source -> sink: new key material and link statistics)
* ``POST /link/v1/notices`` ``{"notices": [{"seq", "kind", "key_ID", "owner", "master", "slave",
  "size", "segment", "offset"}]}`` -> ``{"applied_up_to": seq}`` (either way: keys issued/voided)
"""

from __future__ import annotations

import base64
import binascii
import ssl
import uuid
from collections.abc import Sequence
from typing import Any

import aiohttp

from keyserver.kms.store import Notice, Segment
from keyserver.pki.tls import common_name

MAX_LINK_BODY = 8 * 1024 * 1024


class PeerUnavailable(Exception):
    """The peer KME could not be reached or refused the message."""


class PeerProtocolError(ValueError):
    """A link message from the peer does not parse."""


cert_common_name = common_name


# -- wire encoding ---------------------------------------------------------------------------------
def encode_segments(segments: Sequence[Segment]) -> list[dict[str, Any]]:
    return [
        {"seq": s.seq, "owner": s.owner, "material": base64.b64encode(s.material).decode()}
        for s in segments
    ]


def _int(d: dict[str, Any], k: str) -> int:
    v = d.get(k)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise PeerProtocolError(f"{k} must be a non-negative integer")
    return v


def _str(d: dict[str, Any], k: str) -> str:
    v = d.get(k)
    if not isinstance(v, str) or len(v) > 256:
        raise PeerProtocolError(f"{k} must be a string")
    return v


def decode_segments(raw: Any, owners: set[str]) -> list[Segment]:
    if not isinstance(raw, list):
        raise PeerProtocolError("segments must be an array")
    out = []
    for d in raw:
        if not isinstance(d, dict) or set(d) != {"seq", "owner", "material"}:
            raise PeerProtocolError("segment must be {seq, owner, material}")
        owner = _str(d, "owner")
        if owner not in owners:
            raise PeerProtocolError(f"segment owner {owner!r} is not a KME of this link")
        try:
            material = base64.b64decode(_str_long(d, "material"), validate=True)
        except binascii.Error:
            raise PeerProtocolError("segment material is not base64") from None
        out.append(Segment(_int(d, "seq"), owner, material))
    return out


def _str_long(d: dict[str, Any], k: str) -> str:
    v = d.get(k)
    if not isinstance(v, str):
        raise PeerProtocolError(f"{k} must be a string")
    return v


_NOTICE_FIELDS = {"seq", "kind", "key_ID", "owner", "master", "slave", "size", "segment", "offset"}


def encode_notices(notices: Sequence[Notice]) -> list[dict[str, Any]]:
    return [
        {
            "seq": n.seq,
            "kind": n.kind,
            "key_ID": str(n.key_id),
            "owner": n.owner,
            "master": n.master,
            "slave": n.slave,
            "size": n.size_bytes,
            "segment": n.start_segment,
            "offset": n.start_offset,
        }
        for n in notices
    ]


def decode_notices(raw: Any, owner: str) -> list[Notice]:
    if not isinstance(raw, list):
        raise PeerProtocolError("notices must be an array")
    out = []
    for d in raw:
        if not isinstance(d, dict) or set(d) != _NOTICE_FIELDS:
            raise PeerProtocolError(f"notice must have exactly the fields {sorted(_NOTICE_FIELDS)}")
        kind = d["kind"]
        if kind not in ("issue", "void"):
            raise PeerProtocolError("notice kind must be issue or void")
        if _str(d, "owner") != owner:
            raise PeerProtocolError("a KME may only send notices for keys it issued")
        try:
            key_id = uuid.UUID(_str(d, "key_ID"))
        except ValueError:
            raise PeerProtocolError("notice key_ID is not a UUID") from None
        out.append(
            Notice(
                _int(d, "seq"), kind, key_id, owner, _str(d, "master"), _str(d, "slave"),
                _int(d, "size"), _int(d, "segment"), _int(d, "offset"),
            )
        )
    return out


# -- client ----------------------------------------------------------------------------------------
class PeerClient:
    """Keep-alive mTLS client to the peer KME (`ssl_ctx` pins the peer's certificate CN)."""

    def __init__(self, url: str, peer_id: str, ssl_ctx: ssl.SSLContext, timeout: float = 5.0):
        self._url = url.rstrip("/")
        self._peer_id = peer_id
        self._ssl = ssl_ctx
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=min(2.0, timeout))
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=4),
                timeout=self._timeout,
            )
        return self._session

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            async with self._get_session().post(self._url + path, json=body) as resp:
                data = await resp.json(content_type=None)
                status = resp.status
        except (TimeoutError, aiohttp.ClientError, ssl.SSLError, OSError, ValueError) as e:
            raise PeerUnavailable(f"peer KME {self._peer_id} at {self._url}: {e!r}") from e
        if status != 200:
            raise PeerUnavailable(f"peer answered {status}: {data}")
        if not isinstance(data, dict):
            raise PeerUnavailable("peer answered a non-object")
        return data

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
