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
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from aiohttp import web

from keyserver.etsi014 import messages as etsi014
from keyserver.etsi014.messages import EtsiError, KeyRequest, Limits, Status
from keyserver.etsi014.openapi import API_PREFIX, OPENAPI_PATH, openapi_document
from keyserver.jsonlog import log
from keyserver.pki.tls import common_name

_LOG = logging.getLogger("keyserver.etsi014")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Key = tuple[uuid.UUID, bytes]


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


def _query(request: web.Request) -> dict[str, list[str]]:
    q = request.query
    return {k: q.getall(k) for k in dict.fromkeys(q.keys())}


class Etsi014Api:
    """Routes and handlers of the ETSI 014 API in front of one :class:`KeyService`.

    ``counters`` counts requests and refusals by kind (read by status logs and tests).
    """

    def __init__(self, service: KeyService) -> None:
        self.service = service
        self.counters: dict[str, int] = {
            "enc_requests": 0, "dec_requests": 0, "keys_to_masters": 0, "keys_to_slaves": 0,
            "rejected_400": 0, "rejected_401": 0, "errors_503": 0,
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
        return await request.read()

    async def _no_body(self, request: web.Request) -> None:
        if request.body_exists and await request.read():
            raise etsi014.bad_request("GET requests take no body; use POST to send one")

    # -- handlers --------------------------------------------------------------------------------
    async def h_status(self, request: web.Request) -> web.Response:
        master = self._caller(request)
        await self._no_body(request)
        if request.query:
            raise etsi014.bad_request("Get status takes no query parameters")
        st = await self.service.status(master, request.match_info["sae"])
        return json_response(200, st.body())

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
        return json_response(200, etsi014.key_container(keys))

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
        return json_response(200, etsi014.key_container(keys))

    async def h_openapi(self, request: web.Request) -> web.Response:
        return json_response(200, openapi_document(self.service.limits, self.service.kme_id))

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
            log(_LOG, logging.INFO, "request_refused", method=request.method,
                path=request.path, status=e.status, message=e.message, sae=caller_id(request))
            headers = {"Retry-After": "1"} if e.status == 503 else None
            return json_response(e.status, e.body(), headers)
        except web.HTTPRequestEntityTooLarge:
            return json_response(400, {"message": "request body too large"})
        except web.HTTPException as e:
            return json_response(e.status, {"message": e.reason})
        except Exception as e:
            log(_LOG, logging.ERROR, "internal_error", path=request.path, error=repr(e))
            return json_response(503, {"message": "internal KME error"}, {"Retry-After": "1"})
        log(_LOG, logging.DEBUG, "request", method=request.method, path=request.path,
            status=resp.status, ms=round(1000 * (time.perf_counter() - t0), 3))
        return resp
