"""The ETSI 014 listener's hardening, over real TLS against a KMS node: timeouts, caps, errors.

Slow or silent clients are cut off, a client can hold only so many connections, and every error
(HTTP parse errors too) is a JSON error object that echoes nothing and names no versions.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from keyserver.etsi014.openapi import OPENAPI_PATH
from keyserver.etsi014.server import SERVER_NAME, HttpLimits
from tests.support.kme_fixtures import KmePki, PairEnd, make_pki, running_pair, sae_client, sync_ctx

LIMITS = HttpLimits(header_timeout=0.5, body_timeout=0.5, max_connections_per_client=4)
STATUS = "/api/v1/keys/bob/status"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> KmePki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def kme(pki: KmePki, tmp_path: Path) -> AsyncIterator[PairEnd]:
    async with running_pair(pki.demo, tmp_path, http=LIMITS, max_key_count=50) as (a, _b):
        yield a


async def _connect(
    kme: PairEnd, ctx: ssl.SSLContext
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", kme.port, ssl=ctx)


async def _closed_by_server(reader: asyncio.StreamReader, within: float = 10.0) -> bytes:
    """Everything the server sent until it closed the connection (fails if it never does)."""
    return await asyncio.wait_for(reader.read(), within)


def _response(raw: bytes) -> tuple[int, dict[str, str], dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    return status, headers, json.loads(body)


@pytest.mark.parametrize("with_cert", [True, False])
async def test_a_half_sent_header_is_cut_off(kme: PairEnd, pki: KmePki, with_cert: bool) -> None:
    reader, writer = await _connect(kme, sync_ctx(pki.demo, pki.demo.alice if with_cert else None))
    writer.write(b"GET " + STATUS.encode() + b" HTTP/1.1\r\nHost: kme\r\n")  # never finished
    await writer.drain()
    assert await _closed_by_server(reader) == b""
    writer.close()


async def test_a_silent_connection_is_cut_off(kme: PairEnd, pki: KmePki) -> None:
    reader, writer = await _connect(kme, sync_ctx(pki.demo, pki.demo.alice))
    assert await _closed_by_server(reader) == b""
    writer.close()


async def test_a_slow_body_gets_a_json_400(kme: PairEnd, pki: KmePki) -> None:
    reader, writer = await _connect(kme, sync_ctx(pki.demo, pki.demo.alice))
    writer.write(
        b"POST /api/v1/keys/bob/enc_keys HTTP/1.1\r\nHost: kme\r\nContent-Type: application/json"
        b'\r\nContent-Length: 100\r\n\r\n{"number"'
    )
    await writer.drain()
    status, headers, body = _response(await _closed_by_server(reader))
    assert status == 400
    assert "not received within" in str(body["message"])
    assert headers["server"] == SERVER_NAME
    writer.close()


async def test_connections_per_client_are_capped(kme: PairEnd, pki: KmePki) -> None:
    ctx = sync_ctx(pki.demo, pki.demo.alice)
    held = [await _connect(kme, ctx) for _ in range(LIMITS.max_connections_per_client)]
    reader, writer = await _connect(kme, ctx)  # one too many: closed at once
    assert await _closed_by_server(reader) == b""
    writer.close()
    # another client is not affected, and the capped client's open connections still work
    async with sae_client(pki.demo, kme.url, pki.carol) as carol:
        assert (await carol.get(STATUS)).status_code == 401  # answered (not registered here)
    r, w = held[0]
    w.write(b"GET " + STATUS.encode() + b" HTTP/1.1\r\nHost: kme\r\nConnection: close\r\n\r\n")
    status, _, _ = _response(await _closed_by_server(r))
    assert status == 200
    for _, w in held:
        w.close()
    assert kme._listener is not None
    assert kme._listener.counter.refused >= 1


async def test_unparsable_request_gets_json_that_echoes_nothing(kme: PairEnd, pki: KmePki) -> None:
    reader, writer = await _connect(kme, sync_ctx(pki.demo, pki.demo.alice))
    writer.write(b"GET /\x01<script>evil</script> HTTP/1.1\r\nHost: kme\r\n\r\n")
    await writer.drain()
    raw = await _closed_by_server(reader)
    status, headers, body = _response(raw)
    assert status == 400
    assert headers["content-type"].startswith("application/json")
    assert body == {"message": "bad HTTP request"}
    assert b"evil" not in raw
    assert "aiohttp" not in headers.get("server", "") and "Python" not in headers.get("server", "")
    writer.close()


async def test_wrong_method_is_405_with_allow_and_json(kme: PairEnd, pki: KmePki) -> None:
    async with sae_client(pki.demo, kme.url, pki.demo.alice) as alice:
        r = await alice.put("/api/v1/keys/bob/enc_keys", json={})
    assert r.status_code == 405
    assert set(r.headers["Allow"].replace(" ", "").split(",")) == {"GET", "POST"}
    assert "message" in r.json()
    assert r.headers["Server"] == SERVER_NAME


async def test_openapi_needs_a_client_certificate(kme: PairEnd, pki: KmePki) -> None:
    async with sae_client(pki.demo, kme.url, None) as anonymous:
        r = await anonymous.get(OPENAPI_PATH)
    assert r.status_code == 401
    assert "message" in r.json()
    async with sae_client(pki.demo, kme.url, pki.demo.alice) as alice:
        assert (await alice.get(OPENAPI_PATH)).status_code == 200


async def test_client_disconnect_is_not_an_error(
    kme: PairEnd, pki: KmePki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    _reader, writer = await _connect(kme, sync_ctx(pki.demo, pki.demo.alice))
    writer.write(
        b"POST /api/v1/keys/bob/enc_keys HTTP/1.1\r\nHost: kme\r\nContent-Length: 50\r\n\r\n{"
    )
    await writer.drain()
    writer.close()
    await asyncio.sleep(1.0)  # let the server notice (its body timeout is 0.5 s)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    async with sae_client(pki.demo, kme.url, pki.demo.alice) as alice:  # still serving
        assert (await alice.get(STATUS)).status_code == 200


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="header_timeout"):
        HttpLimits(header_timeout=0)
    with pytest.raises(ValueError, match="max_connections_per_client"):
        HttpLimits(max_connections=2, max_connections_per_client=3)


def test_the_aiohttp_internals_we_extend_are_there() -> None:
    """The listener subclasses aiohttp's RequestHandler/AppRunner (pinned in pyproject.toml)."""
    import inspect

    from aiohttp import web
    from aiohttp.web_protocol import RequestHandler

    assert list(inspect.signature(RequestHandler.handle_error).parameters) == [
        "self",
        "request",
        "status",
        "exc",
        "message",
    ]
    assert hasattr(web.AppRunner, "_make_server")
    assert {"request_factory", "handler_cancellation", "loop"} <= set(
        inspect.signature(web.Server.__init__).parameters
    )
