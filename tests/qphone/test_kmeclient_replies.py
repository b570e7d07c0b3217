"""qphone's ETSI 014 client against a KME that answers wrongly: every reply that is not ETSI 014
(too long, not JSON, a container of other keys) is one KmeProtocolError, and the client stays
usable. The KME here is a small aiohttp HTTPS server on 127.0.0.1 with its own test CA."""

from __future__ import annotations

import base64
import json
import ssl
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from qphone.kmeclient import MAX_REPLY_BYTES, KmeClient, KmeProtocolError, KmeRejected
from tests.support.recordingkme import _certificate

KID = uuid.UUID("3f1a2b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b")


def _container(*entries: dict[str, object]) -> bytes:
    return json.dumps({"keys": list(entries)}).encode()


GOOD = {"key_ID": str(KID), "key": base64.b64encode(bytes(32)).decode()}
REPLIES: dict[str, tuple[int, bytes]] = {
    "good": (200, _container(GOOD)),
    "huge": (200, b" " * MAX_REPLY_BYTES + b"{}"),
    "notjson": (200, b"<html>hello</html>"),
    "short": (200, _container({**GOOD, "key": base64.b64encode(bytes(16)).decode()})),
    "member": (200, _container({**GOOD, "owner": "x"})),
    "twice": (200, _container(GOOD, GOOD)),
    "refused": (400, b'{"message": "bad size"}'),
}


@pytest.fixture
async def kme(tmp_path: Path) -> AsyncIterator[KmeClient]:
    ca, cert, key = _certificate(tmp_path)

    async def answer(request: web.Request) -> web.Response:
        status, body = REPLIES[request.match_info["sae"]]
        return web.Response(status=status, body=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/api/v1/keys/{sae}/enc_keys", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = runner.addresses[0][1]
    try:  # the server asks for no client certificate: its own serves as the client's
        async with KmeClient(
            f"https://127.0.0.1:{port}", ca_cert=ca, client_cert=cert, client_key=key
        ) as client:
            yield client
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        ("huge", f"more than {MAX_REPLY_BYTES} bytes"),
        ("notjson", "without JSON"),
        ("short", "16 bytes, expected 32"),
        ("member", "not an object of key_ID and key"),
        ("twice", "holds 2 keys, expected 1..1"),
    ],
)
async def test_a_reply_that_is_not_etsi_014_is_one_protocol_error(
    kme: KmeClient, reply: str, why: str
) -> None:
    with pytest.raises(KmeProtocolError, match=why.replace(".", r"\.")):
        await kme.enc_keys(reply, 1, 256)
    [key] = await kme.enc_keys("good", 1, 256)  # the connection pool is still good
    assert key.key_id == KID and key.material == bytes(32)


async def test_a_refusal_is_typed(kme: KmeClient) -> None:
    with pytest.raises(KmeRejected) as e:
        await kme.enc_keys("refused", 1, 256)
    assert e.value.status == 400 and e.value.message == "bad size"
