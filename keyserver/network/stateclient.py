"""Reading nodes' state (``GET /kms/v1/state``) and acting on modules (``/admin/v1/eve``).

Blocking, for the launcher's display and the ``network status`` / ``network eve`` commands;
authenticated with the ``network-admin`` certificates of the node and module trust domains.
"""

from __future__ import annotations

import http.client
import json
import ssl
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


class StateClient:
    def __init__(self, node_ca: Path, admin: CertPaths) -> None:
        self._ctx = client_context(node_ca, admin.cert, admin.key)

    def get(self, node_url: str) -> dict[str, Any] | None:
        """A node's state, or None if it does not answer."""
        try:
            status, body = _request(node_url, self._ctx, "GET", "/kms/v1/state")
        except (OSError, ssl.SSLError, http.client.HTTPException, ValueError):
            return None
        return body if status == 200 and isinstance(body, dict) else None


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
