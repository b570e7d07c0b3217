"""TLS contexts for the KME (server and peer client) and for SAE clients: TLS 1.2+, mutual auth."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any


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


def client_context(
    ca_cert: Path, cert: Path | None, key: Path | None, *, expect_cn: str | None = None
) -> ssl.SSLContext:
    """Client side: verify the server against `ca_cert` (and its host name), present `cert`.

    With `expect_cn`, the handshake also fails unless the server certificate's subject CN is
    exactly `expect_cn` (the peer KME's ID): any client library on asyncio gets the check.
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_cert))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    if expect_cn is not None:
        ctx.sslobject_class = _cn_checking_sslobject(expect_cn)
    return ctx


def common_name(peercert: Any) -> str | None:
    """Subject CN of a ``getpeercert()`` dict (None unless exactly one)."""
    if not isinstance(peercert, dict):
        return None
    cns = [v for rdn in peercert.get("subject", ()) for (k, v) in rdn if k == "commonName"]
    return cns[0] if len(cns) == 1 else None


def _cn_checking_sslobject(expected: str) -> type[ssl.SSLObject]:
    class CnCheckingSSLObject(ssl.SSLObject):
        def do_handshake(self) -> None:
            super().do_handshake()
            cn = common_name(self.getpeercert())
            if cn != expected:
                raise ssl.SSLCertVerificationError(
                    f"server certificate CN is {cn!r}, expected the peer KME {expected!r}"
                )

    return CnCheckingSSLObject
