"""One KME: the ETSI GS QKD 014 HTTPS API for its SAEs plus its end of the inter-KME link.

Routes (all HTTPS, mutual TLS, identity = subject CN of the client certificate):

* ``GET  /api/v1/keys/{slave_SAE_ID}/status``            (caller = a local master SAE)
* ``GET|POST /api/v1/keys/{slave_SAE_ID}/enc_keys``      (caller = a local master SAE)
* ``GET|POST /api/v1/keys/{master_SAE_ID}/dec_keys``     (caller = the local slave SAE)
* ``GET  /api/v1/openapi.json``
* ``POST /link/v1/segments``, ``POST /link/v1/notices``  (caller = the peer KME only)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from keyserver.jsonlog import log
from keyserver.kms import etsi014
from keyserver.kms.config import KmeConfig
from keyserver.kms.etsi014 import EtsiError, Limits, Status
from keyserver.kms.issuer import Issuer, OutOfKeys, apply_peer_notices
from keyserver.kms.link import BlockSource, LinkRunner
from keyserver.kms.linkstats import LinkStats
from keyserver.kms.openapi import API_PREFIX, OPENAPI_PATH, openapi_document
from keyserver.kms.peer import (
    MAX_LINK_BODY,
    PeerClient,
    PeerProtocolError,
    PeerUnavailable,
    cert_common_name,
    decode_segments,
)
from keyserver.kms.sqlitestore import SqliteKeyStore
from keyserver.kms.store import (
    IssueRequest,
    KeysNotAuthorized,
    KeysNotFound,
    KeyStore,
    LinkDesync,
    StoreError,
)
from keyserver.pki.tls import client_context, server_context

_LOG = logging.getLogger("keyserver.kms.kme")
MSG_OUT_OF_KEYS = "not enough key material available on KME; retry later"
MSG_PEER_DOWN = "peer KME unreachable; keys cannot be synchronised; retry later"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers)


def _query(request: web.Request) -> dict[str, list[str]]:
    q = request.query
    return {k: q.getall(k) for k in dict.fromkeys(q.keys())}


def caller_id(request: web.Request) -> str | None:
    """The subject CN of the verified client certificate, or None."""
    transport = request.transport
    if transport is None:
        return None
    cert = transport.get_extra_info("peercert")
    if cert is None:
        sslobj = transport.get_extra_info("ssl_object")
        cert = sslobj.getpeercert() if sslobj is not None else None
    return cert_common_name(cert)


class Kme:
    """A KME process's service. ``await start()``, then ``await stop()``."""

    def __init__(
        self,
        config: KmeConfig,
        *,
        source: BlockSource | None = None,
        pace: bool = True,
        store: KeyStore | None = None,
    ) -> None:
        self.config = config
        self.limits: Limits = config.limits
        self._source = source
        self._pace = pace
        self._store_given = store
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self.port = config.port
        self.stats = LinkStats()
        self.counters: dict[str, int] = {
            "enc_requests": 0, "dec_requests": 0, "keys_to_masters": 0, "keys_to_slaves": 0,
            "rejected_400": 0, "rejected_401": 0, "errors_503": 0,
        }
        self.link: LinkRunner | None = None
        self.failed = asyncio.Event()  # a background task died: the process should exit

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.config
        self.store = self._store_given or SqliteKeyStore(
            cfg.data_dir, cfg.id, synchronous=cfg.synchronous
        )
        self.stats = LinkStats.from_json(self.store.get_meta("link_stats"))
        tls = cfg.tls
        self.peer = PeerClient(
            cfg.peer.url, cfg.peer.id,
            client_context(tls.ca_cert, tls.cert, tls.key, expect_cn=cfg.peer.id),
        )
        self.issuer = Issuer(self.store, self.peer)
        app = self.build_app()
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, cfg.host, cfg.port,
            ssl_context=server_context(tls.ca_cert, tls.cert, tls.key), backlog=1024,
        )
        await site.start()
        server: Any = site._server  # the bound port when configured as 0
        if server is not None and server.sockets:
            self.port = int(server.sockets[0].getsockname()[1])
        self._spawn(self.issuer.run())
        self._spawn(self.issuer.retry_loop())
        self._spawn(self._summary_loop())
        if cfg.link.role == "source":
            source = self._source or self._bb84_source()
            self._source = source
            cap = cfg.max_key_count * cfg.limits.key_size // 8
            self.link = LinkRunner(
                self.store, self.peer, source, owners=(cfg.id, cfg.peer.id), cap_bytes=cap,
                stats=self.stats, pace=self._pace,
            )
            self._spawn(self.link.run())
        log(_LOG, logging.INFO, "kme_started", kme_id=cfg.id, url=self.url,
            role=cfg.link.role, local_sae=list(cfg.local_sae), peer=cfg.peer.id)

    def _bb84_source(self) -> BlockSource:
        from keyserver.kms.link import Bb84Source

        cfg = self.config.link
        params: dict[str, Any] = {"distance_km": cfg.distance_km, "eve_fraction": cfg.eve_fraction}
        params.update(cfg.params)
        seed = cfg.seed
        if seed is not None:  # never replay the same randomness after a restart
            seed = seed * 1_000_003 + self.store.next_segment_seq()
        return Bb84Source(params, cfg.pulses_per_block, seed)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log(_LOG, logging.CRITICAL, "background_task_failed", error=repr(task.exception()))
            self.failed.set()

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._runner is not None:
            await self._runner.cleanup()
        await self.peer.aclose()
        if self._source is not None:
            await self._source.aclose()
        self.store.close()
        log(_LOG, logging.INFO, "kme_stopped", kme_id=self.config.id)

    @property
    def url(self) -> str:
        host = self.config.host
        host = f"[{host}]" if ":" in host else host
        return f"https://{host}:{self.port}"

    async def _summary_loop(self, interval: float = 10.0) -> None:
        while True:
            await asyncio.sleep(interval)
            log(_LOG, logging.INFO, "kme_summary", kme_id=self.config.id, **self.counters,
                held_keys=self.store.held_key_count(),
                stored_key_count=self.stored_key_count(), link=self.stats.extension())

    # -- helpers ---------------------------------------------------------------------------------
    def stored_key_count(self) -> int:
        return self.store.available_bytes(self.config.id) * 8 // self.limits.key_size

    def _local_caller(self, request: web.Request) -> str:
        sae = caller_id(request)
        if sae is None:
            raise EtsiError(401, "a client certificate signed by the KME's CA is required")
        if sae not in self.config.local_sae:
            raise EtsiError(401, f"SAE {sae!r} is not registered at KME {self.config.id}")
        return sae

    def _peer_sae(self, sae_id: str, role: str) -> str:
        if sae_id not in self.config.peer.sae:
            raise etsi014.bad_request(
                f"{role} {sae_id!r} is not an SAE reachable from this KME "
                f"(known: {', '.join(self.config.peer.sae)})",
                parameter=role,
            )
        return sae_id

    async def _body(self, request: web.Request, limit: int = etsi014.MAX_BODY_BYTES) -> bytes:
        if request.content_length is not None and request.content_length > limit:
            raise etsi014.bad_request(f"request body larger than {limit} bytes")
        return await request.read()

    async def _no_body(self, request: web.Request) -> None:
        if request.body_exists and await request.read():
            raise etsi014.bad_request("GET requests take no body; use POST to send one")

    def _status_extension(self) -> dict[str, Any]:
        return {"qkd_link": self.stats.extension()}

    # -- ETSI 014 handlers -----------------------------------------------------------------------
    async def h_status(self, request: web.Request) -> web.Response:
        master = self._local_caller(request)
        await self._no_body(request)
        if request.query:
            raise etsi014.bad_request("Get status takes no query parameters")
        slave = self._peer_sae(request.match_info["sae"], "slave_SAE_ID")
        st = Status(
            source_kme_id=self.config.id, target_kme_id=self.config.peer.id,
            master_sae_id=master, slave_sae_id=slave,
            stored_key_count=self.stored_key_count(), max_key_count=self.config.max_key_count,
            limits=self.limits, status_extension=self._status_extension(),
        )
        return _json(200, st.body())

    async def h_enc_keys(self, request: web.Request) -> web.Response:
        master = self._local_caller(request)
        self.counters["enc_requests"] += 1
        if request.method == "GET":
            await self._no_body(request)
            req = etsi014.parse_key_request_query(_query(request), self.limits)
        else:
            if request.query:
                raise etsi014.bad_request("POST enc_keys takes its parameters in the JSON body")
            req = etsi014.parse_key_request(await self._body(request), self.limits)
        slave = self._peer_sae(request.match_info["sae"], "slave_SAE_ID")
        try:
            keys = await self.issuer.issue(IssueRequest(master, slave, req.number, req.size_bytes))
        except OutOfKeys:
            raise EtsiError(
                503, MSG_OUT_OF_KEYS,
                [{"stored_key_count": self.stored_key_count(), "requested": req.number,
                  "size": req.size, **self._status_extension()}],
            ) from None
        except (PeerUnavailable, StoreError) as e:
            log(_LOG, logging.WARNING, "enc_keys_failed", master=master, slave=slave, error=str(e))
            raise EtsiError(503, MSG_PEER_DOWN) from None
        self.counters["keys_to_masters"] += len(keys)
        log(_LOG, logging.DEBUG, "enc_keys", master=master, slave=slave, number=len(keys),
            size=req.size, key_IDs=[str(k.key_id) for k in keys])
        return _json(200, etsi014.key_container([(k.key_id, k.material) for k in keys]))

    async def h_dec_keys(self, request: web.Request) -> web.Response:
        slave = self._local_caller(request)
        self.counters["dec_requests"] += 1
        ids: list[uuid.UUID]
        if request.method == "GET":
            await self._no_body(request)
            ids = etsi014.parse_key_ids_query(_query(request))
        else:
            if request.query:
                raise etsi014.bad_request("POST dec_keys takes the key IDs in the JSON body")
            ids = etsi014.parse_key_ids(await self._body(request), self.limits.max_key_per_request)
        master = request.match_info["sae"]
        try:
            keys = self.store.take_keys(master, slave, ids)
        except KeysNotFound:
            raise etsi014.bad_request(etsi014.MSG_NOT_FOUND) from None
        except KeysNotAuthorized:
            raise EtsiError(
                401, f"SAE {slave!r} was not named as slave when these keys were issued by "
                f"{master!r}"
            ) from None
        self.counters["keys_to_slaves"] += len(keys)
        log(_LOG, logging.DEBUG, "dec_keys", master=master, slave=slave, number=len(keys),
            key_IDs=[str(k) for k in ids])
        return _json(200, etsi014.key_container([(k.key_id, k.material) for k in keys]))

    async def h_openapi(self, request: web.Request) -> web.Response:
        return _json(200, openapi_document(self.limits, self.config.id))

    # -- link handlers (peer KME only) -----------------------------------------------------------
    def _peer_caller(self, request: web.Request) -> None:
        if caller_id(request) != self.config.peer.id:
            raise EtsiError(401, "link endpoints are for the peer KME only")

    async def h_link_segments(self, request: web.Request) -> web.Response:
        self._peer_caller(request)
        if self.config.link.role == "source":
            raise etsi014.bad_request("this KME is the link source; it does not take segments")
        try:
            obj = etsi014.parse_json_object(await request.read(), MAX_LINK_BODY)
            segs = decode_segments(obj.get("segments"), {self.config.id, self.config.peer.id})
            stats = obj.get("stats")
            new_stats = LinkStats.from_json_obj(stats) if stats is not None else None
        except PeerProtocolError as e:
            raise etsi014.bad_request(f"bad link message: {e}") from None
        try:
            held = self.store.add_segments(segs, ready=True)
        except StoreError as e:
            raise etsi014.bad_request(f"segments refused: {e}") from None
        if new_stats is not None:
            self.stats = new_stats
            self.store.set_meta("link_stats", new_stats.to_json())
        return _json(200, {"held_up_to": held})

    async def h_link_notices(self, request: web.Request) -> web.Response:
        self._peer_caller(request)
        try:
            obj = etsi014.parse_json_object(await request.read(), MAX_LINK_BODY)
            applied = apply_peer_notices(self.store, obj.get("notices"), self.config.peer.id)
        except PeerProtocolError as e:
            raise etsi014.bad_request(f"bad link message: {e}") from None
        except LinkDesync as e:
            log(_LOG, logging.CRITICAL, "link_desync", error=str(e))
            raise EtsiError(503, f"link desynchronised: {e}") from None
        return _json(200, {"applied_up_to": applied})

    # -- app ---------------------------------------------------------------------------------------
    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        t0 = time.perf_counter()
        try:
            resp = await handler(request)
        except EtsiError as e:
            name = "errors_503" if e.status == 503 else f"rejected_{e.status}"
            self.counters[name] = self.counters.get(name, 0) + 1
            log(_LOG, logging.INFO, "request_refused", method=request.method,
                path=request.path, status=e.status, message=e.message, sae=caller_id(request))
            headers = {"Retry-After": "1"} if e.status == 503 else None
            return _json(e.status, e.body(), headers)
        except web.HTTPRequestEntityTooLarge:
            return _json(400, {"message": "request body too large"})
        except web.HTTPException as e:
            return _json(e.status, {"message": e.reason})
        except Exception as e:
            log(_LOG, logging.ERROR, "internal_error", path=request.path, error=repr(e))
            return _json(503, {"message": "internal KME error"}, {"Retry-After": "1"})
        log(_LOG, logging.DEBUG, "request", method=request.method, path=request.path,
            status=resp.status, ms=round(1000 * (time.perf_counter() - t0), 3))
        return resp

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors], client_max_size=MAX_LINK_BODY)
        r = app.router
        r.add_get(API_PREFIX + "/{sae}/status", self.h_status, allow_head=False)
        r.add_get(API_PREFIX + "/{sae}/enc_keys", self.h_enc_keys, allow_head=False)
        r.add_post(API_PREFIX + "/{sae}/enc_keys", self.h_enc_keys)
        r.add_get(API_PREFIX + "/{sae}/dec_keys", self.h_dec_keys, allow_head=False)
        r.add_post(API_PREFIX + "/{sae}/dec_keys", self.h_dec_keys)
        r.add_get(OPENAPI_PATH, self.h_openapi, allow_head=False)
        r.add_post("/link/v1/segments", self.h_link_segments)
        r.add_post("/link/v1/notices", self.h_link_notices)
        return app
