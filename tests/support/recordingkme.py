"""A recording front door for a real KME: every ETSI 014 request passes through it and is logged.

``recording_kme(profile, directory)`` starts an HTTPS proxy on 127.0.0.1 (its own throwaway CA
and server certificate, made here with ``cryptography``) that forwards each request unchanged to
the profile's real KME with the profile's own client certificate, and writes a copy of the
profile whose ``[kme]`` points at the proxy.  The log says exactly what reached the KME: a test
that expects "no key consumed" checks that no ``enc_keys`` or ``dec_keys`` went through, and
"no network traffic" that nothing did.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from qphone.demo.keyserverprocess import free_port


@dataclass
class KmeLog:
    """The requests that went through, as (method, path) in order."""

    requests: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def calls(self) -> list[str]:
        """The ETSI 014 call of each request: "status", "enc_keys" or "dec_keys"."""
        with self.lock:
            return [path.rsplit("/", 1)[-1] for _, path in self.requests]

    @property
    def keys_taken(self) -> int:
        """Requests that take key from the KME (enc_keys or dec_keys)."""
        return sum(c in ("enc_keys", "dec_keys") for c in self.calls())


def _certificate(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca, cert, key) PEM paths."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "recording KME test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "proxy-ca.pem", directory / "proxy.pem", directory / "proxy.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@contextlib.contextmanager
def recording_kme(profile: Path, directory: Path) -> Iterator[tuple[Path, KmeLog]]:
    """(a copy of ``profile`` that talks to its KME through the proxy, the proxy's log)."""
    directory.mkdir(parents=True, exist_ok=True)
    doc = tomllib.loads(profile.read_text())
    kme = doc["kme"]
    upstream = kme["url"].rstrip("/")
    ca, cert, key = _certificate(directory)
    port = free_port()
    log = KmeLog()
    ready = threading.Event()
    stop: asyncio.Event | None = None
    loop: asyncio.AbstractEventLoop | None = None

    async def serve() -> None:
        nonlocal stop, loop
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        client_ctx = ssl.create_default_context(cafile=kme["ca_cert"])
        client_ctx.load_cert_chain(kme["client_cert"], kme["client_key"])
        async with httpx.AsyncClient(base_url=upstream, verify=client_ctx, timeout=10) as up:

            async def forward(request: web.Request) -> web.Response:
                with log.lock:
                    log.requests.append((request.method, request.path))
                reply = await up.request(
                    request.method,
                    request.path_qs,
                    content=await request.read(),
                    headers={"content-type": request.headers.get("content-type", "")},
                )
                return web.Response(
                    status=reply.status_code,
                    body=reply.content,
                    content_type=reply.headers.get("content-type", "application/json").split(";")[
                        0
                    ],
                )

            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", forward)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            server_ctx.load_cert_chain(cert, key)
            site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=server_ctx)
            await site.start()
            ready.set()
            await stop.wait()
            await runner.cleanup()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    if not ready.wait(15):
        raise RuntimeError("the recording KME proxy did not start")
    text = profile.read_text()
    text = text.replace(f'"{kme["url"]}"', f'"https://127.0.0.1:{port}"')
    text = text.replace(f'"{kme["ca_cert"]}"', f'"{ca}"')
    proxied = directory / profile.name
    proxied.write_text(text)
    try:
        yield proxied, log
    finally:
        assert loop is not None and stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
