"""Node-to-node HTTPS client: mTLS in the node trust domain, the peer node's CN pinned.

Optionally records every message it sends and every reply (testing: ``record_dir``).
"""

from __future__ import annotations

import ssl
from typing import Any

import aiohttp

from keyserver.kms.nodeconfig import Tls
from keyserver.kms.recorder import Recorder
from keyserver.pki.tls import client_context


class NodeUnreachable(Exception):
    """The peer node did not answer, or answered something else than 200/202."""

    def __init__(self, message: str, status: int = 0, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class NodeClient:
    """One keep-alive connection pool (one aiohttp session) per peer node, for the node's life:
    a relay hop costs a request, not a TLS handshake. ``sent`` counts requests by path."""

    def __init__(
        self, peer: str, url: str, tls: Tls, recorder: Recorder | None, timeout: float = 3.0
    ) -> None:
        self.peer = peer
        self.url = url
        self._ssl = client_context(tls.ca_cert, tls.cert, tls.key, expect_cn=peer)
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=min(2.0, timeout))
        self._session: aiohttp.ClientSession | None = None
        self._rec = recorder
        self.sent: dict[str, int] = {}

    def _s(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=16),
                timeout=self._timeout,
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.sent[path] = self.sent.get(path, 0) + 1
        if self._rec is not None:
            self._rec.message("out", self.peer, path, body)
        try:
            async with self._s().post(self.url + path, json=body) as resp:
                data = await resp.json(content_type=None)
                status = resp.status
        except (TimeoutError, aiohttp.ClientError, ssl.SSLError, OSError, ValueError) as e:
            raise NodeUnreachable(f"node {self.peer} at {self.url}: {e!r}") from None
        if self._rec is not None:
            self._rec.message("reply", self.peer, path, data)
        if status not in (200, 202) or not isinstance(data, dict):
            msg = data.get("message") if isinstance(data, dict) else None
            raise NodeUnreachable(f"node {self.peer} answered {status}: {msg}", status, data)
        return data
