"""TLS contexts for the KME (server and peer client) and for SAE clients: TLS 1.2+, mutual auth."""

from __future__ import annotations

import ssl
from pathlib import Path


def server_context(ca_cert: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """KME listener. A client certificate is asked for and verified against `ca_cert` when sent.

    It is optional at the TLS layer so that a client without one gets a proper ETSI 401 reply;
    every API handler refuses requests without a verified certificate.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(cafile=str(ca_cert))
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def client_context(ca_cert: Path, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    """Client side: verify the server against `ca_cert` (and its host name), present `cert`."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_cert))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return ctx
