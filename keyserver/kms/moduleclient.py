"""The node's ETSI GS QKD 014 client towards one of its QKD modules (or any ETSI 014 KME).

The node is the module's only SAE: on the transmitter side it is the master (``enc_keys``
with the remote node as slave), on the receiver side the slave (``dec_keys`` with the remote
node as master). mTLS in the module trust domain; the module's certificate CN is pinned.
"""

from __future__ import annotations

import json
import ssl
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp

from keyserver.etsi014.key import Key
from keyserver.etsi014.messages import MAX_CONTAINER_BYTES, KeyContainerError, parse_key_container
from keyserver.etsi014.statuswatch import MAX_VERSION
from keyserver.kms.nodeconfig import ModuleRef, Tls
from keyserver.pki.tls import client_context


class ModuleUnavailable(Exception):
    """The module did not answer (down, fibre cut, TLS failure) or answered 503."""


class ModuleRefused(Exception):
    """The module answered 400/401 (e.g. unknown key IDs)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"module answered {status}: {message}")
        self.status = status


@dataclass(frozen=True)
class ModuleStatus:
    key_size: int  # bits
    stored_key_count: int
    max_key_per_request: int
    link: dict[str, Any]  # status_extension.qkd_link (may be empty for a vendor KME)
    # status_extension.status_version of a KME whose Get status can be watched
    # (keyserver.etsi014.statuswatch); None: it cannot, ask it on a clock
    version: int | None = None

    @property
    def state(self) -> str:
        s = self.link.get("state")
        return s if isinstance(s, str) else "running"

    @property
    def alarm(self) -> bool:
        return self.link.get("eavesdropper_alarm") is True

    @property
    def qber(self) -> float | None:
        for k in ("qber_ewma", "qber", "last_qber"):
            v = self.link.get(k)
            if isinstance(v, int | float) and not isinstance(v, bool):
                return float(v)
        return None

    @property
    def rate_bps(self) -> float:
        v = self.link.get("key_rate_bps")
        return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else 0.0


def _int(obj: dict[str, Any], k: str) -> int:
    v = obj.get(k)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ModuleUnavailable(f"module status: {k} missing or not an integer")
    return v


class ModuleApi(Protocol):
    """What the node needs from a QKD module (or any ETSI 014 KME) on one of its links."""

    async def status(self, after: int | None = None, wait: float = 0.0) -> ModuleStatus:
        """Get status; with `after` (a version the KME reported), watched: answered once the
        version moves on or after `wait` seconds."""
        ...

    async def enc_keys(self, number: int, size_bits: int) -> list[Key]: ...

    async def dec_keys(self, key_ids: Sequence[uuid.UUID], size_bits: int) -> list[Key]: ...

    async def aclose(self) -> None: ...


class ModuleClient:
    """ETSI 014 over HTTPS to a module: the production :class:`ModuleApi`."""

    def __init__(self, ref: ModuleRef, tls: Tls, remote_node: str, timeout: float = 3.0) -> None:
        self.ref = ref
        self._remote = quote(ref.remote_sae or remote_node, safe="")
        self._ssl = client_context(tls.ca_cert, tls.cert, tls.key, expect_cn=ref.id)
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=min(2.0, timeout))
        self._session: aiohttp.ClientSession | None = None

    def _s(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=2),
                timeout=self._timeout,
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _call(self, method: str, path: str, body: Any = None, wait: float = 0.0) -> bytes:
        """The body of the module's 200 reply (at most MAX_CONTAINER_BYTES), else raise;
        `wait`: seconds the module may hold the request before it answers (a watch)."""
        url = f"{self.ref.url}/api/v1/keys/{self._remote}/{path}"
        timeout = (
            aiohttp.ClientTimeout(
                total=wait + self._timeout.total if self._timeout.total else None,
                connect=self._timeout.connect,
            )
            if wait
            else None
        )
        try:
            async with self._s().request(method, url, json=body, timeout=timeout) as resp:
                status = resp.status
                data = await _read_bounded(resp.content)
        except (TimeoutError, aiohttp.ClientError, ssl.SSLError, OSError) as e:
            raise ModuleUnavailable(f"module {self.ref.id} at {self.ref.url}: {e!r}") from None
        if data is None:
            raise ModuleUnavailable(f"module {self.ref.id} answered more than it may")
        if status == 200:
            return data
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError):
            obj = None
        message = str(obj.get("message", "")) if isinstance(obj, dict) else ""
        if status in (400, 401):
            raise ModuleRefused(status, message)
        raise ModuleUnavailable(f"module {self.ref.id} answered {status}: {message}")

    async def status(self, after: int | None = None, wait: float = 0.0) -> ModuleStatus:
        path = "status" if after is None else f"status?after={after}&wait={wait:.3f}"
        try:
            obj = json.loads(await self._call("GET", path, wait=wait if after is not None else 0))
        except (ValueError, RecursionError):
            raise ModuleUnavailable("module status is not JSON") from None
        if not isinstance(obj, dict):
            raise ModuleUnavailable("module status is not an object")
        ext = obj.get("status_extension")
        link = ext.get("qkd_link") if isinstance(ext, dict) else None
        version = ext.get("status_version") if isinstance(ext, dict) else None
        return ModuleStatus(
            _int(obj, "key_size"),
            _int(obj, "stored_key_count"),
            _int(obj, "max_key_per_request"),
            link if isinstance(link, dict) else {},
            version
            if isinstance(version, int)
            and not isinstance(version, bool)
            and 0 <= version < MAX_VERSION
            else None,
        )

    async def enc_keys(self, number: int, size_bits: int) -> list[Key]:
        return _keys(
            await self._call("POST", "enc_keys", {"number": number, "size": size_bits}),
            size_bits // 8,
            number,
        )

    async def dec_keys(self, key_ids: Sequence[uuid.UUID], size_bits: int) -> list[Key]:
        body = {"key_IDs": [{"key_ID": str(k)} for k in key_ids]}
        got = _keys(await self._call("POST", "dec_keys", body), size_bits // 8, len(key_ids))
        if [k.key_id for k in got] != list(key_ids):
            if {k.key_id for k in got} != set(key_ids):
                raise ModuleUnavailable("module returned other key IDs than asked for")
            order = {k: i for i, k in enumerate(key_ids)}
            got.sort(key=lambda k: order[k.key_id])
        return got


async def _read_bounded(content: aiohttp.StreamReader) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    async for chunk in content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_CONTAINER_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _keys(body: bytes, size: int, number: int) -> list[Key]:
    """The `number` keys of `size` bytes of a module's key container (etsi014's one parser)."""
    try:
        keys = parse_key_container(body, key_bytes=size, max_keys=number)
    except KeyContainerError as e:
        raise ModuleUnavailable(f"module reply: {e}") from None
    if len(keys) != number:
        raise ModuleUnavailable(f"module returned {len(keys)} keys, expected {number}")
    return keys
