"""One KME: an ETSI GS QKD 014 key service for its SAEs plus its end of the inter-KME link.

The HTTP layer of the ETSI API is :mod:`keyserver.etsi014.server`; this class is its key service.

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
import uuid
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from keyserver.etsi014 import messages as etsi014
from keyserver.etsi014.messages import EtsiError, KeyRequest, Limits, Status
from keyserver.etsi014.server import (
    Etsi014Api,
    Key,
    Listener,
    caller_id,
    guarded_app,
    json_response,
    start_server,
)
from keyserver.jsonlog import log
from keyserver.kms.config import KmeConfig
from keyserver.kms.issuer import Issuer, OutOfKeys, apply_peer_notices
from keyserver.kms.link import BlockSource, LinkRunner
from keyserver.kms.linkstats import LinkStats
from keyserver.kms.peer import (
    MAX_LINK_BODY,
    PeerClient,
    PeerProtocolError,
    PeerUnavailable,
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
        self._limits: Limits = config.limits
        self._source = source
        self._pace = pace
        self._store_given = store
        self._tasks: list[asyncio.Task[None]] = []
        self._listener: Listener | None = None
        self.port = config.port
        self.stats = LinkStats()
        self.api = Etsi014Api(self, config.http)
        self.counters = self.api.counters
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
        self._listener = await start_server(
            self.build_app(), cfg.host, cfg.port,
            server_context(tls.ca_cert, tls.cert, tls.key), cfg.http,
        )
        self.port = self._listener.port
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
        if self._listener is not None:
            await self._listener.cleanup()
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
    @property
    def kme_id(self) -> str:
        return self.config.id

    @property
    def limits(self) -> Limits:
        return self._limits

    def stored_key_count(self) -> int:
        return self.store.available_bytes(self.config.id) * 8 // self.limits.key_size

    def authorise(self, caller: str | None) -> str:
        if caller is None:
            raise EtsiError(401, "a client certificate signed by the KME's CA is required")
        if caller not in self.config.local_sae:
            raise EtsiError(401, f"SAE {caller!r} is not registered at KME {self.config.id}")
        return caller

    def _peer_sae(self, sae_id: str, role: str) -> str:
        if sae_id not in self.config.peer.sae:
            raise etsi014.bad_request(
                f"{role} {sae_id!r} is not an SAE reachable from this KME "
                f"(known: {', '.join(self.config.peer.sae)})",
                parameter=role,
            )
        return sae_id

    def _status_extension(self) -> dict[str, Any]:
        return {"qkd_link": self.stats.extension()}

    # -- the ETSI 014 key service (keyserver.etsi014.server.KeyService) --------------------------
    async def status(self, master: str, slave: str) -> Status:
        return Status(
            source_kme_id=self.config.id, target_kme_id=self.config.peer.id,
            master_sae_id=master, slave_sae_id=self._peer_sae(slave, "slave_SAE_ID"),
            stored_key_count=self.stored_key_count(), max_key_count=self.config.max_key_count,
            limits=self.limits, status_extension=self._status_extension(),
        )

    async def enc_keys(self, master: str, slave: str, req: KeyRequest) -> Sequence[Key]:
        slave = self._peer_sae(slave, "slave_SAE_ID")
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
        log(_LOG, logging.DEBUG, "enc_keys", master=master, slave=slave, number=len(keys),
            size=req.size, key_IDs=[str(k.key_id) for k in keys])
        return [(k.key_id, k.material) for k in keys]

    async def dec_keys(
        self, slave: str, master: str, key_ids: Sequence[uuid.UUID]
    ) -> Sequence[Key]:
        try:
            keys = self.store.take_keys(master, slave, key_ids)
        except KeysNotFound:
            raise etsi014.bad_request(etsi014.MSG_NOT_FOUND) from None
        except KeysNotAuthorized:
            raise EtsiError(
                401, f"SAE {slave!r} was not named as slave when these keys were issued by "
                f"{master!r}"
            ) from None
        log(_LOG, logging.DEBUG, "dec_keys", master=master, slave=slave, number=len(keys),
            key_IDs=[str(k) for k in key_ids])
        return [(k.key_id, k.material) for k in keys]

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
        return json_response(200, {"held_up_to": held})

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
        return json_response(200, {"applied_up_to": applied})

    # -- app ---------------------------------------------------------------------------------------
    def build_app(self) -> web.Application:
        app = guarded_app(self.api, client_max_size=MAX_LINK_BODY)
        app.router.add_post("/link/v1/segments", self.h_link_segments)
        app.router.add_post("/link/v1/notices", self.h_link_notices)
        return app
