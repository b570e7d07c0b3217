"""Reading nodes' state (``GET /kms/v1/state``) and acting on modules (``/admin/v1/eve``).

Blocking, for the launcher's display and the ``network status`` / ``network eve`` commands;
authenticated with the ``network-admin`` certificates of the node and module trust domains.
:class:`StateClient` keeps one HTTP/1.1 keep-alive connection per node (a TLS handshake costs
both ends more than the state request itself), so a process that asks again (the launcher's
display, its status socket) pays the handshake once per node, not once per request.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from keyserver.pki.certificates import CertPaths
from keyserver.pki.tls import client_context


def _request(
    url: str, ctx: ssl.SSLContext, method: str, path: str, body: Any = None, timeout: float = 3.0
) -> tuple[int, Any]:
    u = urlsplit(url)
    conn = http.client.HTTPSConnection(
        u.hostname or "", u.port or 443, context=ctx, timeout=timeout
    )
    try:
        data = None if body is None else json.dumps(body).encode()
        headers = {} if data is None else {"content-type": "application/json"}
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, json.loads(raw) if raw else None
    finally:
        conn.close()


# what a request on a kept-alive connection the server has since closed (idle) fails with
_CLOSED_IDLE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class StateClient:
    """``GET /kms/v1/state`` of any node, over one kept-alive connection per node (thread-safe:
    a node's connection is used by one request at a time)."""

    def __init__(self, node_ca: Path, admin: CertPaths, timeout: float = 3.0) -> None:
        self._ctx = client_context(node_ca, admin.cert, admin.key)
        self._timeout = timeout
        self._conns: dict[str, tuple[threading.Lock, list[http.client.HTTPSConnection]]] = {}
        self._guard = threading.Lock()

    def _slot(self, url: str) -> tuple[threading.Lock, list[http.client.HTTPSConnection]]:
        with self._guard:
            return self._conns.setdefault(url, (threading.Lock(), []))

    def get(self, node_url: str) -> dict[str, Any] | None:
        """A node's state, or None if it does not answer."""
        lock, held = self._slot(node_url)
        with lock:
            for attempt in range(2):
                reused = bool(held)
                if not held:
                    u = urlsplit(node_url)
                    held.append(
                        http.client.HTTPSConnection(
                            u.hostname or "",
                            u.port or 443,
                            context=self._ctx,
                            timeout=self._timeout,
                        )
                    )
                conn = held[0]
                try:
                    conn.request("GET", "/kms/v1/state")
                    resp = conn.getresponse()
                    raw = resp.read()
                    if resp.will_close:
                        conn.close()
                        held.clear()
                    body = json.loads(raw) if raw else None
                    return body if resp.status == 200 and isinstance(body, dict) else None
                except _CLOSED_IDLE:
                    conn.close()
                    held.clear()
                    if not reused or attempt:
                        return None
                    # the node had closed the idle connection: once more on a new one
                except (OSError, ssl.SSLError, http.client.HTTPException, ValueError):
                    conn.close()
                    held.clear()
                    return None
        return None

    def close(self) -> None:
        with self._guard:
            for _, held in self._conns.values():
                for conn in held:
                    conn.close()
                held.clear()


class KeyStatusClient:
    """An SAE's view (ETSI GS QKD 014 ``GET .../status``): can a key reach its peer now?"""

    def __init__(self, sae_ca: Path, sae: CertPaths) -> None:
        self._ctx = client_context(sae_ca, sae.cert, sae.key)

    def status(self, kme_url: str, slave: str) -> dict[str, Any] | None:
        """The status towards SAE `slave`, or None if the KME does not answer 200."""
        try:
            status, body = _request(kme_url, self._ctx, "GET", f"/api/v1/keys/{slave}/status")
        except (OSError, ssl.SSLError, http.client.HTTPException, ValueError):
            return None
        return body if status == 200 and isinstance(body, dict) else None


def set_eve(
    module_url: str, module_id: str, module_ca: Path, admin: CertPaths, fraction: float
) -> dict[str, Any]:
    ctx = client_context(module_ca, admin.cert, admin.key, expect_cn=module_id)
    status, body = _request(module_url, ctx, "POST", "/admin/v1/eve", {"fraction": fraction})
    if status != 200 or not isinstance(body, dict):
        msg = body.get("message") if isinstance(body, dict) else body
        raise OSError(f"module {module_id} answered {status}: {msg}")
    return body
