"""A KMS node: ETSI 014 for its SAEs, link keys from its QKD modules, relay across the network.

The node is a composition of agents over one shared
:class:`~keyserver.kms.nodecontext.NodeContext` (config, store, links, counters, node-to-node
clients); read them in this order to follow a relayed key:

* :mod:`keyserver.kms.linkmanager`: link key drawn from the modules, announced, kept in sync
  (:mod:`keyserver.kms.linkstream`);
* :mod:`keyserver.kms.linkstate`: this node's LSA flooded, routes found
  (:mod:`keyserver.kms.routing`);
* :mod:`keyserver.kms.saeservice`: ETSI 014 for the SAEs (``enc_keys`` of a remote slave goes to
  the relay agent);
* the relay agent, driving the sans-I/O :mod:`keyserver.kms.relaymachine` with the hop
  messages of :mod:`keyserver.kms.relay`: :mod:`keyserver.kms.relayinitiator` (the initiator
  role: journal, send, ack, void) and :mod:`keyserver.kms.relayreceiver` (transit and target:
  a hop arriving, forwarded or held for the slave SAE; the ack outbox).

This module only builds them, starts and stops them, and wires the two listeners:

* the **SAE API** (SAE trust domain): ETSI GS QKD 014 through :mod:`keyserver.etsi014.server`,
  for a slave SAE at any node of the network;
* the **node API** (node trust domain, client certificate required, caller CN pinned per
  endpoint): ``/kms/v1/link/announce`` and ``/kms/v1/link/sync`` (neighbour on that link),
  ``/kms/v1/lsa`` (neighbours), ``/kmapi/v1/ext_keys`` (the previous node of the route),
  ``/kmapi/v1/ext_keys/ack`` (nodes of a relay this node started), ``/kmapi/v1/ext_keys/void``
  (the relay's initiator), ``GET /kms/v1/state`` (the network admin certificate).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from keyserver.etsi014.messages import EtsiError
from keyserver.etsi014.server import (
    Etsi014Api,
    Listener,
    caller_id,
    guarded_app,
    json_response,
    start_server,
)
from keyserver.jsonlog import log
from keyserver.kms.linkmanager import ANNOUNCE_PATH, LinkManager
from keyserver.kms.linkstate import LSA_PATH, LinkStateAgent
from keyserver.kms.locallink import LinkRole, LocalLink
from keyserver.kms.moduleclient import ModuleApi, ModuleClient
from keyserver.kms.nodeclient import NodeClient
from keyserver.kms.nodeconfig import NodeConfig
from keyserver.kms.nodecontext import MAX_NODE_BODY, SYNC_PATH, NodeContext
from keyserver.kms.nodestore import NodeStore
from keyserver.kms.recorder import Recorder
from keyserver.kms.relayinitiator import ACK_PATH, HOP_PATH, VOID_PATH, PairStats, RelayInitiator
from keyserver.kms.relayreceiver import RelayReceiver
from keyserver.kms.routing import LinkReport, LinkStateDb, Lsa, RouteDecision
from keyserver.kms.saeservice import SaeService
from keyserver.kms.stockshare import StockShares
from keyserver.kms.storedb import StoreError
from keyserver.pki.tls import server_context
from keyserver.tasks import cancel_all

_LOG = logging.getLogger("keyserver.kms.node")
STATE_PATH = "/kms/v1/state"


class KmsNode:
    """``await start()``, then ``await stop()``."""

    def __init__(self, config: NodeConfig, modules: Mapping[str, ModuleApi] | None = None) -> None:
        """`modules` (link ID -> module API) replaces the HTTPS module clients (tests)."""
        self.config = config
        self._modules = dict(modules or {})
        self.id = config.id
        self.ctx = NodeContext(config)
        # each local SAE's share of the stock of every link (keyserver/kms/stockshare.py)
        saes = config.local_saes()
        self.shares = (
            StockShares(saes, config.max_key_count * config.limits.key_size // 8)
            if saes and config.sae_stock_share
            else None
        )
        self.linkstate = LinkStateAgent(self.ctx)
        self.linkmanager = LinkManager(self.ctx, self.linkstate)
        self.initiator = RelayInitiator(self.ctx, self.linkstate, self.linkmanager, self.shares)
        self.receiver = RelayReceiver(self.ctx, self.linkmanager)
        self.sae = SaeService(self.ctx, self.linkstate, self.initiator)
        self.api = Etsi014Api(self.sae, config.http)
        self._listeners: list[Listener] = []
        self.sae_port = config.sae_api.port
        self.node_port = config.node_api.port

    # -- what tests, the launcher and the state endpoint read ------------------------------------
    @property
    def store(self) -> NodeStore:
        return self.ctx.store

    @property
    def links(self) -> dict[str, LocalLink]:
        return self.ctx.links

    @property
    def counters(self) -> dict[str, int]:
        return self.ctx.counters

    @property
    def peers(self) -> dict[str, NodeClient]:
        return self.ctx.peers

    @property
    def recorder(self) -> Recorder | None:
        return self.ctx.recorder

    @property
    def failed(self) -> asyncio.Event:
        return self.ctx.failed

    @property
    def lsdb(self) -> LinkStateDb:
        return self.linkstate.lsdb

    @property
    def pairs(self) -> dict[tuple[str, str], PairStats]:
        return self.initiator.pairs

    def own_lsa(self) -> Lsa:
        return self.linkstate.own_lsa()

    def routes(self, dst: str, need_bytes: int) -> RouteDecision:
        return self.linkstate.routes(dst, need_bytes)

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        cfg, ctx = self.config, self.ctx
        if cfg.record_dir is not None:
            ctx.recorder = Recorder(cfg.record_dir, self.id, cfg.record_view)
        ctx.store = NodeStore(cfg.data_dir, self.id, synchronous=cfg.synchronous)
        for spec in cfg.local_links():
            neighbour = spec.other(self.id)
            self.store.link_keys.init_link(spec.id, (spec.a, spec.b))
            module = self._modules.get(spec.id) or ModuleClient(
                cfg.module_for(spec.id), cfg.module_tls, neighbour, cfg.timers.request_timeout
            )
            role = LinkRole.TRANSMITTER if spec.a == self.id else LinkRole.RECEIVER
            ctx.links[spec.id] = LocalLink(spec, neighbour, role, module)
        self.initiator.void_after_restart()
        self.sae_port = await self._listen(
            self._sae_app(), cfg.sae_api.host, cfg.sae_api.port, cfg.sae_api.tls
        )
        self.node_port = await self._listen(
            self._node_app(), cfg.node_api.host, cfg.node_api.port, cfg.node_api.tls
        )
        self.linkmanager.start()
        ctx.spawn(self.linkstate.run())
        self.initiator.start()
        self.receiver.start()
        log(
            _LOG,
            logging.INFO,
            "node_started",
            node=self.id,
            sae_port=self.sae_port,
            node_port=self.node_port,
            links=sorted(self.links),
            saes=cfg.local_saes(),
        )

    async def _listen(self, app: web.Application, host: str, port: int, tls: Any) -> int:
        listener = await start_server(
            app, host, port, server_context(tls.ca_cert, tls.cert, tls.key), self.config.http
        )
        self._listeners.append(listener)
        return listener.port

    @property
    def _listener(self) -> Listener | None:
        """The SAE API's listener (its connection counters)."""
        return self._listeners[0] if self._listeners else None

    async def stop(self) -> None:
        left = await cancel_all(self.ctx.tasks)
        if left:
            log(_LOG, logging.ERROR, "tasks_left_running", node=self.id, tasks=len(left))
        for lst in self._listeners:
            await lst.cleanup()
        for p in self.peers.values():
            await p.aclose()
        for link in self.links.values():
            await link.module.aclose()
        self.store.close()
        if self.recorder is not None:
            self.recorder.close()
        log(_LOG, logging.INFO, "node_stopped", node=self.id)

    @property
    def sae_url(self) -> str:
        return f"https://{self.config.sae_api.host}:{self.sae_port}"

    url = sae_url

    # -- the two listeners -----------------------------------------------------------------------
    def _sae_app(self) -> web.Application:
        return guarded_app(self.api)

    def _node_app(self) -> web.Application:
        app = guarded_app(self.api, client_max_size=MAX_NODE_BODY, etsi_routes=False)
        r = app.router
        r.add_post(ANNOUNCE_PATH, self.linkmanager.h_announce)
        r.add_post(SYNC_PATH, self.linkmanager.h_sync)
        r.add_post(LSA_PATH, self.linkstate.h_lsa)
        r.add_post(HOP_PATH, self.receiver.h_ext_keys)
        r.add_post(ACK_PATH, self.initiator.h_ack)
        r.add_post(VOID_PATH, self.receiver.h_void)
        r.add_get(STATE_PATH, self.h_state, allow_head=False)
        return app

    async def h_state(self, request: web.Request) -> web.Response:
        if caller_id(request) != self.config.admin:
            raise EtsiError(401, "node state is for the network admin certificate only")
        return json_response(200, self.state())

    def state(self) -> dict[str, Any]:
        now = time.monotonic()
        links = {}
        for lid, link in sorted(self.links.items()):
            st = link.status
            links[lid] = {
                "neighbour": link.neighbour,
                "role": link.role.value,
                "synced": link.synced,
                "neighbour_ok": link.neighbour_ok,
                "report": _report_json(
                    link.report(8 * self.store.link_keys.stock_bytes(lid, self.id))
                ),
                "stock_bits": {
                    o: 8 * self.store.link_keys.stock_bytes(lid, o)
                    for o in (link.spec.a, link.spec.b)
                },
                "module": st.link if st else {"error": link.module_error},
                "bits_drawn": link.bits_drawn,
                "bits_spent_payload": link.bits_spent_payload,
                "bits_spent_auth": link.bits_spent_auth,
                "desyncs_repaired": link.desyncs,
            }
        return {
            "node": self.id,
            "time": time.time(),
            "links": links,
            "network": [
                {
                    "link": v.link,
                    "up": v.up,
                    "reasons": list(v.reasons),
                    "alarm": v.alarm,
                    "qber": v.qber,
                    "rate_bps": v.rate_bps,
                    "stock_bits": v.stock_bits,
                }
                for v in self.lsdb.views(now)
            ],
            "counters": dict(self.counters),
            "held_keys": self.store.held.count(),
            "pending_relays": self.store.relays.pending_count(),
            "pairs": self.initiator.pairs_state(),
        }


def _report_json(r: LinkReport) -> dict[str, Any]:
    return {
        "up": r.up,
        "reason": r.reason.value if r.reason else None,
        "alarm": r.alarm,
        "qber": r.qber,
        "rate_bps": r.rate_bps,
        "stock_bits": r.stock_bits,
        "module_state": r.module_state,
    }


__all__ = ["MAX_NODE_BODY", "KmsNode", "StoreError"]
