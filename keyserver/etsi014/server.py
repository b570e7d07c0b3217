"""The ETSI GS QKD 014 HTTPS API as an aiohttp application, for any key service behind it.

Both kinds of key server in this package speak ETSI 014 northbound: a KMS node to its SAEs, and
a QKD module to its local KMS node. They differ only in where keys come from, so the HTTP layer
lives here once: routing, the caller's identity (subject CN of its verified client certificate),
strict request parsing (:mod:`keyserver.etsi014.messages`), the OpenAPI document, and one error
middleware that turns every refusal into an ETSI error object. The key service implements
:class:`KeyService`; it never sees HTTP.

Routes (``API_PREFIX`` = ``/api/v1/keys``):

* ``GET  {API_PREFIX}/{slave_SAE_ID}/status``
* ``GET|POST {API_PREFIX}/{slave_SAE_ID}/enc_keys``
* ``GET|POST {API_PREFIX}/{master_SAE_ID}/dec_keys``
* ``GET  /api/v1/openapi.json``

Hardening (:class:`HttpLimits`, :func:`start_server`): a TLS handshake timeout; a header timeout
from a connection's (or a request's) first byte to its complete header; a body timeout; an idle
(keep-alive) timeout; a cap on connections in total and per client (its certificate CN, or its
address without one). Every error, HTTP parse errors included, gets a JSON ETSI error object that
echoes nothing of the request; 405 carries ``Allow``; the ``Server`` header names no versions; a
client that disconnects mid-request is logged at debug level, not as an error.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from keyserver.etsi014 import messages as etsi014
from keyserver.etsi014.key import Key
from keyserver.etsi014.messages import EtsiError, KeyRequest, Limits, Status
from keyserver.etsi014.openapi import API_PREFIX, OPENAPI_PATH, openapi_document
from keyserver.etsi014.statuswatch import StatusWatch, WatchQueryError, parse_watch_query
from keyserver.jsonlog import log
from keyserver.pki.tls import common_name

_LOG = logging.getLogger("keyserver.etsi014")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SERVER_NAME = "qkd-keyserver"  # the Server header: no product versions


@dataclass(frozen=True)
class HttpLimits:
    """Timeouts (seconds) and connection caps of an ETSI 014 listener."""

    tls_handshake_timeout: float = 10.0
    header_timeout: float = 10.0  # first byte of a request -> its header complete
    body_timeout: float = 10.0  # header complete -> body complete
    idle_timeout: float = 30.0  # keep-alive: end of a response -> first byte of the next
    max_connections: int = 1024
    max_connections_per_client: int = 64  # per certificate CN, or per address without one

    def __post_init__(self) -> None:
        for name in ("tls_handshake_timeout", "header_timeout", "body_timeout", "idle_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        if not 1 <= self.max_connections_per_client <= self.max_connections:
            raise ValueError("need 1 <= max_connections_per_client <= max_connections")


class _BodyTimeout(EtsiError):
    """The body did not arrive in time: answered, then the connection is closed."""


class KeyService(Protocol):
    """What an ETSI 014 server needs from the key store behind it (no HTTP inside).

    Each method raises :class:`EtsiError` for a refusal (400 bad request, 401 not authorised,
    503 no key now); anything else is an internal error (503 to the caller, logged).
    """

    @property
    def kme_id(self) -> str: ...

    @property
    def limits(self) -> Limits: ...

    def authorise(self, caller: str | None) -> str:
        """The caller's SAE ID if it may use this API at all, else raise EtsiError(401)."""
        ...

    async def status(self, master: str, slave: str) -> Status: ...

    async def enc_keys(self, master: str, slave: str, request: KeyRequest) -> Sequence[Key]: ...

    async def dec_keys(
        self, slave: str, master: str, key_ids: Sequence[uuid.UUID]
    ) -> Sequence[Key]: ...


def caller_id(request: web.Request) -> str | None:
    """The subject CN of the verified client certificate, or None."""
    transport = request.transport
    if transport is None:
        return None
    cert = transport.get_extra_info("peercert")
    if cert is None:
        sslobj = transport.get_extra_info("ssl_object")
        cert = sslobj.getpeercert() if sslobj is not None else None
    return common_name(cert)


def json_response(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(body, status=status, headers=headers)


def key_container_response(keys: Sequence[Key]) -> web.Response:
    """200 with the ETSI 014 key container of `keys` (the same bytes and headers as
    ``json_response(200, etsi014.key_container(keys))``, without the JSON encoder)."""
    return web.Response(
        body=etsi014.key_container_json(keys), content_type="application/json", charset="utf-8"
    )


def _query(request: web.Request) -> dict[str, list[str]]:
    q = request.query
    return {k: q.getall(k) for k in dict.fromkeys(q.keys())}


class Etsi014Api:
    """Routes and handlers of the ETSI 014 API in front of one :class:`KeyService`.

    ``counters`` counts requests and refusals by kind (read by status logs and tests).
    """

    def __init__(
        self,
        service: KeyService,
        limits: HttpLimits | None = None,
        watch: StatusWatch | None = None,
    ) -> None:
        self.service = service
        self.http_limits = limits or HttpLimits()
        self.watch = watch  # Get status may be watched (keyserver.etsi014.statuswatch)
        self.counters: dict[str, int] = {
            "enc_requests": 0,
            "dec_requests": 0,
            "keys_to_masters": 0,
            "keys_to_slaves": 0,
            "rejected_400": 0,
            "rejected_401": 0,
            "errors_503": 0,
        }

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get(API_PREFIX + "/{sae}/status", self.h_status, allow_head=False)
        r.add_get(API_PREFIX + "/{sae}/enc_keys", self.h_enc_keys, allow_head=False)
        r.add_post(API_PREFIX + "/{sae}/enc_keys", self.h_enc_keys)
        r.add_get(API_PREFIX + "/{sae}/dec_keys", self.h_dec_keys, allow_head=False)
        r.add_post(API_PREFIX + "/{sae}/dec_keys", self.h_dec_keys)
        r.add_get(OPENAPI_PATH, self.h_openapi, allow_head=False)

    # -- request helpers -------------------------------------------------------------------------
    def _caller(self, request: web.Request) -> str:
        return self.service.authorise(caller_id(request))

    async def _body(self, request: web.Request, limit: int = etsi014.MAX_BODY_BYTES) -> bytes:
        if request.content_length is not None and request.content_length > limit:
            raise etsi014.bad_request(f"request body larger than {limit} bytes")
        return await self._read(request)

    async def _read(self, request: web.Request) -> bytes:
        if request.content.is_eof():  # the whole body is in (a small one usually is): no timer
            return await request.read()
        seconds = self.http_limits.body_timeout
        try:
            async with asyncio.timeout(seconds):
                return await request.read()
        except TimeoutError:
            raise _BodyTimeout(400, f"request body not received within {seconds:g} s") from None

    async def _no_body(self, request: web.Request) -> None:
        if request.body_exists and await self._read(request):
            raise etsi014.bad_request("GET requests take no body; use POST to send one")

    # -- handlers --------------------------------------------------------------------------------
    async def h_status(self, request: web.Request) -> web.Response:
        master = self._caller(request)
        await self._no_body(request)
        if request.query:
            if self.watch is None:
                raise etsi014.bad_request("Get status takes no query parameters")
            try:
                after, wait = parse_watch_query(_query(request))
            except WatchQueryError as e:
                raise etsi014.bad_request(str(e)) from None
            await self.service.status(master, request.match_info["sae"])  # refused: at once
            await self.watch.wait_past(after, wait)
        st = await self.service.status(master, request.match_info["sae"])
        body = st.body()
        if self.watch is not None:
            ext = body.setdefault("status_extension", {})
            ext["status_version"] = self.watch.version
        return json_response(200, body)

    async def h_enc_keys(self, request: web.Request) -> web.Response:
        master = self._caller(request)
        self.counters["enc_requests"] += 1
        limits = self.service.limits
        if request.method == "GET":
            await self._no_body(request)
            req = etsi014.parse_key_request_query(_query(request), limits)
        else:
            if request.query:
                raise etsi014.bad_request("POST enc_keys takes its parameters in the JSON body")
            req = etsi014.parse_key_request(await self._body(request), limits)
        keys = await self.service.enc_keys(master, request.match_info["sae"], req)
        self.counters["keys_to_masters"] += len(keys)
        return key_container_response(keys)

    async def h_dec_keys(self, request: web.Request) -> web.Response:
        slave = self._caller(request)
        self.counters["dec_requests"] += 1
        ids: list[uuid.UUID]
        if request.method == "GET":
            await self._no_body(request)
            ids = etsi014.parse_key_ids_query(_query(request))
        else:
            if request.query:
                raise etsi014.bad_request("POST dec_keys takes the key IDs in the JSON body")
            ids = etsi014.parse_key_ids(
                await self._body(request), self.service.limits.max_key_per_request
            )
        keys = await self.service.dec_keys(slave, request.match_info["sae"], ids)
        self.counters["keys_to_slaves"] += len(keys)
        return key_container_response(keys)

    async def h_openapi(self, request: web.Request) -> web.Response:
        self._caller(request)
        doc = openapi_document(self.service.limits, self.service.kme_id, self.watch is not None)
        return json_response(200, doc)

    # -- errors ----------------------------------------------------------------------------------
    @web.middleware
    async def errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every refusal as an ETSI error object; internal errors as 503 (logged, not leaked)."""
        t0 = time.perf_counter()
        try:
            resp = await handler(request)
        except EtsiError as e:
            name = "errors_503" if e.status == 503 else f"rejected_{e.status}"
            self.counters[name] = self.counters.get(name, 0) + 1
            log(
                _LOG,
                logging.INFO,
                "request_refused",
                method=request.method,
                path=request.path,
                status=e.status,
                message=e.message,
                sae=caller_id(request),
            )
            headers = {"Retry-After": "1"} if e.status == 503 else None
            resp = json_response(e.status, e.body(), headers)
            if isinstance(e, _BodyTimeout):
                resp.force_close()  # the rest of the body may still come: never read it
            return resp
        except web.HTTPRequestEntityTooLarge:
            return json_response(400, {"message": "request body too large"})
        except web.HTTPException as e:
            allow = {"Allow": e.headers["Allow"]} if "Allow" in e.headers else None
            return json_response(e.status, {"message": e.reason}, allow)
        except (ConnectionResetError, asyncio.CancelledError):
            log(_LOG, logging.DEBUG, "client_disconnected", path=request.path)
            raise
        except Exception as e:
            log(_LOG, logging.ERROR, "internal_error", path=request.path, error=repr(e))
            return json_response(503, {"message": "internal KME error"}, {"Retry-After": "1"})
        if _LOG.isEnabledFor(logging.DEBUG):  # its fields are not even computed otherwise
            log(
                _LOG,
                logging.DEBUG,
                "request",
                method=request.method,
                path=request.path,
                status=resp.status,
                ms=round(1000 * (time.perf_counter() - t0), 3),
            )
        return resp


# -- the listener -------------------------------------------------------------------------------
class _ConnectionCounter:
    """Open connections in total and per client key; one per listener."""

    def __init__(self, limits: HttpLimits) -> None:
        self.limits = limits
        self.total = 0
        self.per_client: dict[str, int] = {}
        self.refused = 0
        self.timed_out = 0

    def admit(self, client: str) -> bool:
        n = self.per_client.get(client, 0)
        if self.total >= self.limits.max_connections or n >= self.limits.max_connections_per_client:
            self.refused += 1
            return False
        self.total += 1
        self.per_client[client] = n + 1
        return True

    def release(self, client: str) -> None:
        self.total -= 1
        n = self.per_client.pop(client) - 1
        if n:
            self.per_client[client] = n


def _client_key(transport: asyncio.BaseTransport) -> str:
    cert = transport.get_extra_info("peercert")
    cn = common_name(cert) if cert else None
    if cn is not None:
        return "cn:" + cn
    peer = transport.get_extra_info("peername")
    return "addr:" + (str(peer[0]) if isinstance(peer, tuple) and peer else "?")


class _GuardedRequestHandler(RequestHandler):
    """aiohttp's request handler plus connection caps, a header timeout and JSON parse errors."""

    def __init__(self, counter: _ConnectionCounter, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._counter = counter
        self._client: str | None = None
        self._header_timer: asyncio.TimerHandle | None = None
        self._in_request = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        client = _client_key(transport)
        if not self._counter.admit(client):
            log(
                _LOG,
                logging.WARNING,
                "connection_refused",
                client=client,
                open=self._counter.per_client.get(client, 0),
            )
            transport.close()
            return
        self._client = client
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm_header_timer()
        if self._client is not None:
            self._counter.release(self._client)
            self._client = None
            super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._in_request and self._header_timer is None:
            self._arm_header_timer()  # the first byte of the next request on a kept-alive link
        super().data_received(data)

    def request_started(self) -> None:
        self._in_request = True
        self._disarm_header_timer()

    def request_finished(self) -> None:
        self._in_request = False

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = asyncio.get_running_loop().call_later(
            self._counter.limits.header_timeout, self._header_expired
        )

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_expired(self) -> None:
        self._header_timer = None
        if not self._in_request and self.transport is not None:
            self._counter.timed_out += 1
            log(_LOG, logging.INFO, "header_timeout", client=self._client)
            self.transport.abort()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A request aiohttp could not parse: one JSON error, nothing of the request echoed."""
        log(_LOG, logging.INFO, "bad_http_request", status=status, error=type(exc).__name__)
        text = "bad HTTP request" if status < 500 else "internal KME error"
        resp = json_response(status if status < 500 else 503, {"message": text})
        resp.headers["Server"] = SERVER_NAME
        resp.force_close()
        return resp


class _GuardedServer(web.Server):
    def __init__(self, counter: _ConnectionCounter, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._counter = counter

    def __call__(self) -> RequestHandler:
        return _GuardedRequestHandler(self._counter, self, loop=self._loop, **self._kwargs)


class _GuardedRunner(web.AppRunner):
    def __init__(self, app: web.Application, counter: _ConnectionCounter, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._counter = counter

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return _GuardedServer(
            self._counter,
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            **server._kwargs,
        )


@web.middleware
async def _track_request(request: web.Request, handler: Handler) -> web.StreamResponse:
    protocol = request.protocol
    if isinstance(protocol, _GuardedRequestHandler):
        protocol.request_started()
    try:
        return await handler(request)
    finally:
        if isinstance(protocol, _GuardedRequestHandler):
            protocol.request_finished()


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = SERVER_NAME


class _TlsSite(web.BaseSite):
    """Like aiohttp's TCPSite, with a TLS handshake timeout."""

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext,
        handshake_timeout: float,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=1024)
        self._host = host
        self._port = port
        self._handshake_timeout = handshake_timeout
        self.bound_port = port

    @property
    def name(self) -> str:
        return f"https://{self._host}:{self.bound_port}"

    async def start(self) -> None:
        await super().start()
        assert self._runner.server is not None
        server = await asyncio.get_running_loop().create_server(
            self._runner.server,
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            ssl_handshake_timeout=self._handshake_timeout,
        )
        self._server = server
        if server.sockets:
            self.bound_port = int(server.sockets[0].getsockname()[1])


@dataclass
class Listener:
    """A started ETSI 014 listener: ``await cleanup()`` stops it; ``port`` is the bound port."""

    runner: web.AppRunner
    port: int
    counter: _ConnectionCounter

    async def cleanup(self) -> None:
        await self.runner.cleanup()


def guarded_app(
    api: Etsi014Api, client_max_size: int = 1024**2, *, etsi_routes: bool = True
) -> web.Application:
    """An aiohttp application with the guard and error middlewares and (unless `etsi_routes`
    is false: a KMS node's node-to-node listener) the API's routes."""
    app = web.Application(middlewares=[_track_request, api.errors], client_max_size=client_max_size)
    app.on_response_prepare.append(_server_header)
    if etsi_routes:
        api.add_routes(app)
    return app


async def start_server(
    app: web.Application, host: str, port: int, ssl_context: ssl.SSLContext, limits: HttpLimits
) -> Listener:
    """Serve ``app`` (from :func:`guarded_app`) on host:port over TLS, within ``limits``."""
    counter = _ConnectionCounter(limits)
    runner = _GuardedRunner(
        app,
        counter,
        access_log=None,
        handle_signals=False,
        keepalive_timeout=limits.idle_timeout,
        lingering_time=0,  # never wait for the rest of a body that was refused
    )
    await runner.setup()
    site = _TlsSite(runner, host, port, ssl_context, limits.tls_handshake_timeout)
    await site.start()
    return Listener(runner, site.bound_port, counter)
