"""A KMS node: ETSI 014 for its SAEs, link keys from its QKD modules, relay across the network.

This is the asyncio adapter around the sans-I/O cores (:mod:`keyserver.kms.linkstream`,
:mod:`keyserver.kms.relay`, :mod:`keyserver.kms.routing`) and the store
(:mod:`keyserver.kms.nodestore`). Two listeners:

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
import contextlib
import itertools
import logging
import os
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
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
from keyserver.kms import linkstream, relay
from keyserver.kms.linkstream import StreamView, SyncState, SyncVerdict
from keyserver.kms.moduleclient import (
    ModuleApi,
    ModuleClient,
    ModuleRefused,
    ModuleStatus,
    ModuleUnavailable,
)
from keyserver.kms.nodeclient import NodeClient, NodeUnreachable
from keyserver.kms.nodeconfig import NodeConfig
from keyserver.kms.nodestore import (
    Block,
    FinalHop,
    FinalOutcome,
    HeldKey,
    KeysNotFound,
    NodeStore,
    OutOfLinkKey,
    RelayOut,
    SliceUnavailable,
    Spend,
    StoreError,
)
from keyserver.kms.recorder import Recorder
from keyserver.kms.relay import Ack, AckStatus, HopMessage, RelayFormatError, RelayHeader
from keyserver.kms.routing import DownReason, LinkReport, LinkStateDb, Lsa, RouteDecision
from keyserver.kms.stockshare import StockShares
from keyserver.pki.tls import server_context
from keyserver.topology import LinkSpec

_LOG = logging.getLogger("keyserver.kms.node")
MAX_NODE_BODY = 4 * 1024 * 1024
MSG_OUT_OF_KEYS = "not enough key material available on KME; retry later"
# ETSI GS QKD 014 defines no error codes; these go in an error's details so that clients can
# tell a transient shortage from other failures without reading the message text
REASON_OUT_OF_KEYS = "out_of_keys"
REASON_NO_ROUTE = "no_route"
MAX_ROUTES_KEPT = 32  # distinct routes counted per SAE pair in the status extension
REASON_RELAY_FAILED = "relay_failed"  # voided at both ends; a new request may succeed
BATCH_MAX_BYTES = 65_536  # key bytes of one merged relay (enc_keys requests queued together)
ROUTE_CACHE_S = 0.1  # a route found serves the requests of the next 100 ms (see routes())
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class LocalLink:
    """One of this node's links, as this node sees it."""

    spec: LinkSpec
    neighbour: str
    transmitter: bool  # this node hosts the transmitter module (it draws and announces)
    module: ModuleApi
    status: ModuleStatus | None = None
    module_error: str = ""
    neighbour_ok: bool = True
    synced: bool = False
    desyncs: int = 0
    in_flight: dict[int, int] = field(default_factory=dict)  # spend start -> count
    announce_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # look at the module now
    poke: asyncio.Event = field(default_factory=asyncio.Event)  # sync with the neighbour now
    misses: int = 0  # module status requests in a row that failed (the next one backs off)
    # monotonic time of the last sync exchange (from creation: a starting node gives its
    # neighbour the whole timeout before calling it unreachable)
    last_sync: float = field(default_factory=time.monotonic)
    bits_spent_payload: int = 0
    bits_spent_auth: int = 0
    bits_drawn: int = 0

    def report(self, stock_bits: int) -> LinkReport:
        st = self.status
        reason: DownReason | None = None
        if st is None:
            reason = DownReason.MODULE_UNREACHABLE
        elif st.alarm:
            reason = DownReason.EAVESDROPPER
        elif st.state == "aborted":
            reason = DownReason.ABORTED
        elif st.state != "running":
            reason = DownReason.NOT_RUNNING
        elif not self.neighbour_ok:
            reason = DownReason.NEIGHBOUR_UNREACHABLE
        elif not self.synced:
            reason = DownReason.SYNCING
        return LinkReport(
            link=self.spec.id,
            up=reason is None,
            reason=reason,
            alarm=bool(st and st.alarm),
            qber=st.qber if st else None,
            rate_bps=st.rate_bps if st else 0.0,
            stock_bits=stock_bits,
            module_state=st.state if st else "unreachable",
        )


@dataclass
class _Waiting:
    future: asyncio.Future[Ack]
    nodes: set[str]
    target: str


@dataclass
class _Batch:
    """enc_keys requests of one (master, slave, key size) waiting for the relay in flight: they
    go together as the next relay (one transaction and one hop message per node for all)."""

    waiting: list[tuple[int, asyncio.Future[list[Key]]]] = field(default_factory=list)
    running: bool = False


@dataclass
class PairStats:
    relays: int = 0
    failures: int = 0
    last_ms: float = 0.0
    total_ms: float = 0.0
    last_route: tuple[tuple[str, ...], ...] = ()
    link_bits: dict[str, int] = field(default_factory=dict)
    # relays delivered per route taken (its legs' links; at most MAX_ROUTES_KEPT routes)
    routes_used: dict[tuple[tuple[str, ...], ...], int] = field(default_factory=dict)


class KmsNode:
    """``await start()``, then ``await stop()``."""

    def __init__(self, config: NodeConfig, modules: Mapping[str, ModuleApi] | None = None) -> None:
        """`modules` (link ID -> module API) replaces the HTTPS module clients (tests)."""
        self.config = config
        self._modules = dict(modules or {})
        self.id = config.id
        self._limits = config.limits
        self.api = Etsi014Api(self, config.http)
        self._tasks: list[asyncio.Task[None]] = []
        self._listeners: list[Listener] = []
        self.failed = asyncio.Event()
        self._waiting: dict[uuid.UUID, _Waiting] = {}
        self._wake_acks = asyncio.Event()
        self._wake_voids = asyncio.Event()
        self._wake_lsa = asyncio.Event()  # something an LSA says may have changed
        self._lsa_urgent = False  # ... and it is a link going up or down: flood it at once
        self._spent_bucket: dict[str, int] = {}  # link -> own stock's bit length at the last spend
        self._batches: dict[tuple[str, str, int], _Batch] = {}  # (master, slave, size) -> queue
        self._route_cache: dict[str, tuple[float, int, RouteDecision]] = {}  # dst -> (t, need, r)
        self._lsa_queue: dict[str, dict[str, Lsa]] = {}  # neighbour -> origin -> LSA to pass on
        self._rng = random.Random()  # timer jitter only (no security use)
        self.pairs: dict[tuple[str, str], PairStats] = {}
        # each local SAE's share of the stock of every link (keyserver/kms/stockshare.py)
        saes = config.local_saes()
        self.shares = (
            StockShares(saes, config.max_key_count * config.limits.key_size // 8)
            if saes and config.sae_stock_share
            else None
        )
        self.counters: dict[str, int] = {
            "relays_started": 0,
            "relays_delivered": 0,
            "relays_failed": 0,
            "hops_forwarded": 0,
            "hops_refused": 0,
            "relays_received": 0,
            "voids_sent": 0,
            "voids_received": 0,
            "held_expired": 0,
            "desyncs_repaired": 0,
            "announcements": 0,
            # what the node does on its own (docs/network.md, "Timings"): these grow with
            # change (keys drawn, links up/down, relays), not with time, while a network idles
            "module_polls": 0,
            "syncs_sent": 0,
            "lsa_floods": 0,
            "lsa_posts": 0,
            "wakeups": 0,
        }
        self.sae_port = config.sae_api.port
        self.node_port = config.node_api.port
        self.recorder: Recorder | None = None
        topo = config.topology
        self.lsdb = LinkStateDb(
            ((x.id, x.a, x.b) for x in topo.links), topo.node_ids(), config.lsa_max_age
        )

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.config
        if cfg.record_dir is not None:
            self.recorder = Recorder(cfg.record_dir, self.id, cfg.record_view)
        self.store = NodeStore(cfg.data_dir, self.id, synchronous=cfg.synchronous)
        self.links: dict[str, LocalLink] = {}
        for spec in cfg.local_links():
            neighbour = spec.other(self.id)
            self.store.init_link(spec.id, (spec.a, spec.b))
            module = self._modules.get(spec.id) or ModuleClient(
                cfg.module_for(spec.id), cfg.module_tls, neighbour
            )
            self.links[spec.id] = LocalLink(spec, neighbour, spec.a == self.id, module)
        # a client (TLS context, connection pool) per peer node, made on the first message to
        # it: most nodes of a large network never talk to most others
        self._peer_ids = {n for n in cfg.topology.node_ids() if n != self.id and n in cfg.node_urls}
        self.peers: dict[str, NodeClient] = {}
        voided = self.store.void_pending_relays(now_ms() + int(2 * cfg.relay_timeout * 1000))
        if voided:
            log(_LOG, logging.WARNING, "relays_voided_after_restart", count=voided)
        self.sae_port = await self._listen(
            self._sae_app(), cfg.sae_api.host, cfg.sae_api.port, cfg.sae_api.tls
        )
        self.node_port = await self._listen(
            self._node_app(), cfg.node_api.host, cfg.node_api.port, cfg.node_api.tls
        )
        for link in self.links.values():
            self._spawn(self._link_loop(link))
            self._spawn(self._sync_loop(link))
        self._spawn(self._lsa_loop())
        self._spawn(self._ack_loop())
        self._spawn(self._void_loop())
        self._spawn(self._expire_loop())
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

    # -- link keys: drawing, announcing, syncing -------------------------------------------------
    def _cap_bytes(self) -> int:
        return self.config.max_key_count * self._limits.key_size // 8

    def _jittered(self, seconds: float) -> float:
        j = self.config.timers.jitter
        return seconds * self._rng.uniform(1.0 - j, 1.0 + j)

    async def _sleep_or(self, event: asyncio.Event, seconds: float | None) -> None:
        """Until `event` is set or `seconds` pass (None: until the event); clears the event."""
        if seconds is None:
            await event.wait()
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), seconds)
        event.clear()
        self.counters["wakeups"] += 1

    def _hungry(self, link: LocalLink) -> bool:
        """The link wants key soon: not in sync, module unknown, or below a quarter of its cap."""
        if link.status is None or not link.synced:
            return True
        if not link.transmitter:
            return False
        lid = link.spec.id
        low = min(self.store.stock_bytes(lid, o) for o in (link.spec.a, link.spec.b))
        return low < self._cap_bytes() // 4

    async def _link_loop(self, link: LocalLink) -> None:
        """Look at the module (its state, alarm, key) and draw key; event-driven when idle.

        Keys are drawn as long as the module holds some and the stock is below its cap. Then
        the loop sleeps until a relay spends key on the link (``link.wake``) or, with nothing
        happening, ``timers.module_poll`` seconds (``hungry_poll`` while the link is below a
        quarter of its cap or not in sync, so that the first keys come fast; while the module
        does not answer, from ``hungry_poll`` doubling up to ``module_poll``).
        """
        while True:
            was = link.report(0)
            try:
                self.counters["module_polls"] += 1
                link.status = await link.module.status()
                link.module_error, link.misses = "", 0
            except (ModuleUnavailable, ModuleRefused) as e:
                link.status, link.module_error = None, str(e)
                link.misses += 1
            now = link.report(0)
            if (was.up, was.reason) != (now.up, now.reason):
                log(
                    _LOG,
                    logging.INFO if now.up else logging.WARNING,
                    "link_state",
                    link=link.spec.id,
                    up=now.up,
                    reason=now.reason.value if now.reason else None,
                    error=link.module_error or None,
                )
                self._lsa_changed(urgent=True)
            drew = False
            if link.transmitter and link.status is not None:
                with contextlib.suppress(NodeUnreachable, ModuleUnavailable, ModuleRefused):
                    drew = await self._draw(link, link.status)
            if drew:
                self._lsa_changed()
                continue  # the module may hold more: draw until it is empty or we are full
            t = self.config.timers
            wait = t.hungry_poll if self._hungry(link) else t.module_poll
            if link.misses:  # module down: back off from hungry_poll to module_poll
                wait = min(t.module_poll, t.hungry_poll * 2 ** min(link.misses - 1, 16))
            await self._sleep_or(link.wake, self._jittered(wait))

    async def _draw(self, link: LocalLink, st: ModuleStatus) -> bool:
        async with link.announce_lock:
            for seq, blocks in self.store.pending(link.spec.id):
                await self._announce(link, seq, blocks)
            if not link.synced:
                return False
            lid = link.spec.id
            stocks = {o: self.store.stock_bytes(lid, o) for o in (link.spec.a, link.spec.b)}
            cap = self._cap_bytes()
            if min(stocks.values()) >= cap or st.stored_key_count < 1:
                return False
            block = st.key_size // 8
            want = max(1, (cap - min(stocks.values())) // max(block, 1))
            n = min(st.stored_key_count, st.max_key_per_request, want, 512)
            keys = await link.module.enc_keys(n, st.key_size)
            owners = linkstream.assign_owners(len(keys), stocks, block)
            blocks = [Block(k, o, m) for (k, m), o in zip(keys, owners, strict=True)]
            seq = self.store.next_announce_seq(lid)
            self.store.add_pending(lid, seq, blocks)
            link.bits_drawn += 8 * block * len(blocks)
            await self._announce(link, seq, blocks)
            return True

    async def _announce(self, link: LocalLink, seq: int, blocks: Sequence[Block]) -> None:
        body = {
            "link": link.spec.id,
            "seq": seq,
            "keys": [{"key_ID": str(b.key_id), "owner": b.owner} for b in blocks],
        }
        reply = await self._post(link.neighbour, "/kms/v1/link/announce", body)
        got_raw = reply.get("got")
        if reply.get("seq") != seq or not isinstance(got_raw, list):
            raise NodeUnreachable("bad announcement reply")
        got = [uuid.UUID(str(g)) for g in got_raw]
        self.store.confirm(link.spec.id, seq, got)
        self.counters["announcements"] += 1
        if len(got) < len(blocks):
            log(
                _LOG,
                logging.WARNING,
                "announced_keys_missing",
                link=link.spec.id,
                seq=seq,
                missing=len(blocks) - len(got),
            )

    async def h_announce(self, request: web.Request) -> web.Response:
        obj = await self._node_body(request)
        link = self._link_from(obj, request, transmitter_caller=True)
        seq = obj.get("seq")
        keys = obj.get("keys")
        if (
            isinstance(seq, bool)
            or not isinstance(seq, int)
            or not 1 <= seq <= 2**62
            or (set(obj) != {"link", "seq", "keys"} or not isinstance(keys, list))
            or not 1 <= len(keys) <= 4096
        ):
            raise etsi014.bad_request(
                "announcement must be exactly {link, seq: 1..2^62, keys[1..4096]}"
            )
        owners = {link.spec.a, link.spec.b}
        entries: list[tuple[uuid.UUID, str]] = []
        for k in keys:
            if not isinstance(k, dict) or set(k) != {"key_ID", "owner"} or k["owner"] not in owners:
                raise etsi014.bad_request("announcement keys are {key_ID, owner of this link}")
            entries.append((etsi014.parse_key_id(k["key_ID"]), str(k["owner"])))
        async with link.announce_lock:
            last = self.store.announce_seq(link.spec.id)
            if seq <= last:
                got = self.store.announced(link.spec.id, seq)
                return json_response(200, {"seq": seq, "got": [str(g) for g in got or []]})
            if seq > last + 1:
                log(
                    _LOG,
                    logging.WARNING,
                    "announcement_gap",
                    link=link.spec.id,
                    expected=last + 1,
                    got=seq,
                )
            st = link.status
            size = st.key_size if st is not None else 0
            fetched = await self._fetch(link, [k for k, _ in entries], size)
            owner_of = dict(entries)
            blocks = [Block(k, owner_of[k], m) for k, m in fetched]
            self.store.apply_announcement(link.spec.id, seq, blocks)
            self._lsa_changed()  # flooded if the stock grew by a factor of two
        return json_response(200, {"seq": seq, "got": [str(b.key_id) for b in blocks]})

    async def _fetch(
        self, link: LocalLink, ids: list[uuid.UUID], size: int
    ) -> list[tuple[uuid.UUID, bytes]]:
        """dec_keys at the receiver module; keys it does not hold are left out."""
        if size <= 0:
            try:
                link.status = await link.module.status()
            except (ModuleUnavailable, ModuleRefused) as e:
                raise EtsiError(503, f"module of link {link.spec.id} unreachable") from e
            size = link.status.key_size
        per = link.status.max_key_per_request if link.status else 128
        out: list[tuple[uuid.UUID, bytes]] = []
        for i in range(0, len(ids), per):
            chunk = ids[i : i + per]
            try:
                out += await link.module.dec_keys(chunk, size)
            except ModuleRefused:  # some IDs unknown: find which, one by one
                for kid in chunk:
                    with contextlib.suppress(ModuleRefused):
                        out += await link.module.dec_keys([kid], size)
            except ModuleUnavailable as e:
                if out:
                    break  # keep what we have; the rest is refused below
                raise EtsiError(503, f"module of link {link.spec.id} unreachable: {e}") from None
        return out

    def _sync_state(self, link: LocalLink) -> SyncState:
        views: list[StreamView] = []
        for owner in (link.spec.a, link.spec.b):
            v = self.store.view(link.spec.id, owner)
            if owner == self.id and link.in_flight:
                v = StreamView(v.owner, v.end, v.layout_hash, min(v.cursor, min(link.in_flight)))
            views.append(v)
        return SyncState(link.spec.id, self.id, self.store.announce_seq(link.spec.id), tuple(views))

    @staticmethod
    def _sync_json(s: SyncState) -> dict[str, Any]:
        return {
            "link": s.link,
            "sender": s.sender,
            "announce_seq": s.announce_seq,
            "streams": [
                {"owner": v.owner, "end": v.end, "layout": v.layout_hash.hex(), "cursor": v.cursor}
                for v in s.streams
            ],
        }

    @staticmethod
    def _sync_from(obj: Any) -> SyncState:
        """A sync message, strictly (anything else is a 400 and changes nothing): exactly
        {link, sender, announce_seq, streams}, two streams of distinct owners, each exactly
        {owner, end, layout, cursor} with integer positions 0 <= cursor <= end <= 2^62 and a
        32-byte layout hash in hex."""
        bad = etsi014.bad_request(
            "sync must be {link, sender, announce_seq: 0..2^62, streams: two of {owner, "
            "end: 0..2^62, layout: 64 hex digits, cursor: 0..end}}"
        )

        def pos(v: Any) -> int:
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 2**62:
                raise bad
            return v

        def name(v: Any) -> str:
            if not isinstance(v, str) or not etsi014.valid_sae_id(v):
                raise bad
            return v

        if not isinstance(obj, dict) or set(obj) != {"link", "sender", "announce_seq", "streams"}:
            raise bad
        raw = obj["streams"]
        if not isinstance(raw, list) or len(raw) != 2:
            raise bad
        streams = []
        for v in raw:
            if not isinstance(v, dict) or set(v) != {"owner", "end", "layout", "cursor"}:
                raise bad
            layout = v["layout"]
            if not isinstance(layout, str) or len(layout) != 64:
                raise bad
            try:
                digest = bytes.fromhex(layout)
            except ValueError:
                raise bad from None
            end, cursor = pos(v["end"]), pos(v["cursor"])
            if cursor > end:
                raise bad
            streams.append(StreamView(name(v["owner"]), end, digest, cursor))
        if streams[0].owner == streams[1].owner:
            raise bad
        return SyncState(
            name(obj["link"]), name(obj["sender"]), pos(obj["announce_seq"]), tuple(streams)
        )

    def _apply_sync(self, link: LocalLink, mine: SyncState, theirs: SyncState) -> None:
        """Compare two snapshots taken while no announcement was between the nodes."""
        if theirs.sender != link.neighbour:
            raise etsi014.bad_request("sync sender is not the neighbour on this link")
        lid = link.spec.id
        seen = {link.neighbour: self.store.max_cursor_seen(lid, link.neighbour)}
        res = linkstream.compare(mine, theirs, seen, link.spec.a)
        link.last_sync = time.monotonic()
        if res.verdict is SyncVerdict.DESYNC:
            for owner, end in res.repair:
                self.store.repair(lid, owner, end)
            self.store.set_announce_seq(lid, res.announce_seq)
            link.synced = False
            link.desyncs += 1
            self.counters["desyncs_repaired"] += 1
            log(
                _LOG,
                logging.WARNING,
                "link_desync_repaired",
                link=lid,
                reason=res.reason,
                streams=[o for o, _ in res.repair],
            )
            self._wake_lsa.set()
            return
        their_own = next(v for v in theirs.streams if v.owner == link.neighbour)
        self.store.owner_cursor(lid, link.neighbour, their_own.cursor)
        if res.verdict is SyncVerdict.CONSISTENT and not link.synced:
            link.synced = True
            link.wake.set()
            log(_LOG, logging.INFO, "link_synced", link=lid)
            self._wake_lsa.set()

    async def _sync_loop(self, link: LocalLink) -> None:
        """The transmitter side syncs (holding its announcement lock, so that no announcement
        is between the nodes while they compare); the receiver side answers and watches.

        In sync, the transmitter side syncs every ``timers.sync_heartbeat`` seconds (jittered)
        and at once when a request to the neighbour failed (``link.poke``); out of sync it
        retries after 0.3 s, doubling up to the heartbeat. The receiver side declares the
        neighbour unreachable after ``timers.neighbour_timeout`` seconds without a sync.
        """
        t = self.config.timers
        retry = 0.3
        while True:
            if not link.transmitter:
                left = link.last_sync + t.neighbour_timeout - time.monotonic()
                ok = left > 0
                if ok != link.neighbour_ok:
                    link.neighbour_ok = ok
                    if not ok:
                        link.synced = False
                        log(
                            _LOG,
                            logging.WARNING,
                            "neighbour_unreachable",
                            link=link.spec.id,
                            neighbour=link.neighbour,
                            error=f"no sync for {t.neighbour_timeout:g} s",
                        )
                    self._lsa_changed(urgent=True)
                # asleep until the timeout would pass (a sync moves it) or a sync comes back
                await self._sleep_or(link.poke, left if ok else None)
                continue
            try:
                async with link.announce_lock:
                    sent = self._sync_state(link)
                    self.counters["syncs_sent"] += 1
                    reply = await self._post(
                        link.neighbour, "/kms/v1/link/sync", self._sync_json(sent)
                    )
                    self._apply_sync(link, sent, self._sync_from(reply))
                if not link.neighbour_ok:
                    link.neighbour_ok = True
                    self._lsa_changed(urgent=True)
            except (NodeUnreachable, EtsiError) as e:
                if link.neighbour_ok:
                    log(
                        _LOG,
                        logging.WARNING,
                        "neighbour_unreachable",
                        link=link.spec.id,
                        neighbour=link.neighbour,
                        error=str(e),
                    )
                    link.neighbour_ok = False
                    self._lsa_changed(urgent=True)
            if link.synced and link.neighbour_ok:
                retry = 0.3
                await self._sleep_or(link.poke, self._jittered(t.sync_heartbeat))
            else:
                await self._sleep_or(link.poke, retry)
                retry = min(2 * retry, t.sync_heartbeat)

    async def h_sync(self, request: web.Request) -> web.Response:
        obj = await self._node_body(request)
        link = self._link_from(obj, request, transmitter_caller=True)
        theirs = self._sync_from(obj)
        if theirs.link != link.spec.id or {v.owner for v in theirs.streams} != {
            link.spec.a,
            link.spec.b,
        }:
            raise etsi014.bad_request(f"a sync on link {link.spec.id} is about its two streams")
        async with link.announce_lock:  # not in the middle of applying an announcement
            mine = self._sync_state(link)
            self._apply_sync(link, mine, theirs)
        if not link.neighbour_ok:
            link.neighbour_ok = True
            link.poke.set()  # the watcher goes back to timing the neighbour out
            self._lsa_changed(urgent=True)
        return json_response(200, self._sync_json(mine))

    # -- link state ------------------------------------------------------------------------------
    def own_lsa(self) -> Lsa:
        reports = tuple(
            link.report(8 * self.store.stock_bytes(lid, self.id))
            for lid, link in sorted(self.links.items())
        )
        return Lsa(self.id, now_ms(), reports)

    def _lsa_changed(self, urgent: bool = False) -> None:
        """What this node's LSA says may have changed (urgent: a link went up or down)."""
        self._lsa_urgent = self._lsa_urgent or urgent
        self._wake_lsa.set()

    @staticmethod
    def _lsa_signature(lsa: Lsa) -> tuple[tuple[str, bool, bool, int], ...]:
        """What neighbours need to hear about: up/down, alarm, and the stock to within a
        factor of two (bucket 0: no key at all, which :func:`_flags` makes urgent)."""
        return tuple((r.link, r.up, r.alarm, r.stock_bits.bit_length()) for r in lsa.links)

    async def _lsa_loop(self) -> None:
        """Flood this node's LSA when it changes, pass on what neighbours sent, refresh.

        A link going up or down (here or in an LSA received) is flooded at once, at most every
        ``lsa_interval`` seconds; a stock that moved by a factor of two and LSAs passed on go
        in batches at most every ``timers.lsa_batch`` seconds; with nothing changing, the own
        LSA is re-flooded every ``timers.lsa_refresh`` seconds (jittered), well within
        ``lsa_max_age``.
        """
        from keyserver.kms.routing import lsa_to_json

        t = self.config.timers
        sent: Lsa | None = None
        last_flood = -1e9
        refresh_at = 0.0
        while True:
            now = time.monotonic()
            mine = self.own_lsa()
            self.lsdb.update(mine, now)
            sig = self._lsa_signature(mine)
            own_due = sent is None or sig != self._lsa_signature(sent) or now >= refresh_at
            forward = any(self._lsa_queue.values())
            if own_due or forward:
                urgent = self._lsa_urgent or sent is None or _flags(sent) != _flags(mine)
                gap = self.config.lsa_interval if urgent else t.lsa_batch
                if now - last_flood < gap:
                    await self._sleep_or(self._wake_lsa, last_flood + gap - now)
                    continue  # look again: it may have become urgent meanwhile
                self._lsa_urgent = False
                last_flood = now
                if own_due:
                    sent = mine
                    refresh_at = now + self._jittered(t.lsa_refresh)
                    self.counters["lsa_floods"] += 1
                sends = []
                for n in sorted({link.neighbour for link in self.links.values()}):
                    queued = self._lsa_queue.pop(n, {})
                    lsas = [mine] if own_due else []
                    lsas += queued.values()
                    if lsas:
                        self.counters["lsa_posts"] += 1
                        sends.append(
                            self._post_quiet(
                                n, "/kms/v1/lsa", {"lsas": [lsa_to_json(x) for x in lsas]}
                            )
                        )
                await asyncio.gather(*sends)
                continue
            await self._sleep_or(self._wake_lsa, max(0.0, refresh_at - now))

    async def _post_quiet(self, peer: str, path: str, body: dict[str, Any]) -> None:
        with contextlib.suppress(NodeUnreachable):
            await self._post(peer, path, body)

    async def h_lsa(self, request: web.Request) -> web.Response:
        from keyserver.kms.routing import LsaFormatError, lsa_from_json

        obj = await self._node_body(request)
        caller = self._node_caller(request)
        if caller not in {link.neighbour for link in self.links.values()}:
            raise EtsiError(401, "link-state advertisements come from neighbours only")
        raw = obj.get("lsas")
        if not isinstance(raw, list) or len(raw) > 256:
            raise etsi014.bad_request("lsas must be a list")
        try:
            lsas = [lsa_from_json(x) for x in raw]
        except LsaFormatError as e:
            raise etsi014.bad_request(f"bad LSA: {e}") from None
        now = time.monotonic()
        for lsa in lsas:
            if lsa.origin == self.id:
                continue
            old = self.lsdb.fresh(lsa.origin, now)
            if self.lsdb.update(lsa, now):
                for n in {link.neighbour for link in self.links.values()} - {caller, lsa.origin}:
                    self._lsa_queue.setdefault(n, {})[lsa.origin] = lsa
                # a link went up or down: pass it on at once; anything else goes in a batch
                self._lsa_changed(urgent=old is None or _flags(old) != _flags(lsa))
        return json_response(200, {"ok": True})

    def links_neighbours(self) -> set[str]:
        return {link.neighbour for link in self.links.values()}

    def routes(self, dst: str, need_bytes: int) -> RouteDecision:
        """Routes to `dst` for a hop spending `need_bytes`. A route found is reused for
        ROUTE_CACHE_S for requests needing no more (a graph of the whole network is not rebuilt
        for every key request; link state itself moves at the pace of LSAs, and the first
        link's stock is checked again by the spend)."""
        now = time.monotonic()
        hit = self._route_cache.get(dst)
        if hit is not None and now - hit[0] < ROUTE_CACHE_S and need_bytes <= hit[1]:
            return hit[2]
        self.lsdb.update(self.own_lsa(), now)
        decision = self.lsdb.routes(self.id, dst, 8 * need_bytes, self.config.multipath, now)
        if decision.ok:
            self._route_cache[dst] = (now, need_bytes, decision)
        else:
            self._route_cache.pop(dst, None)
        return decision

    # -- ETSI 014 key service ----------------------------------------------------------------
    @property
    def kme_id(self) -> str:
        return self.id

    @property
    def limits(self) -> Limits:
        return self._limits

    def authorise(self, caller: str | None) -> str:
        if caller is None:
            raise EtsiError(401, "a client certificate signed by the KME's CA is required")
        if caller not in self.config.local_saes():
            raise EtsiError(401, f"SAE {caller!r} is not registered at KME {self.id}")
        return caller

    def _peer_node(self, sae: str, role: str) -> str:
        node = self.config.topology.sae_node(sae)
        if node is None:
            known = ", ".join(s.id for s in self.config.topology.saes)
            raise etsi014.bad_request(
                f"{role} {sae!r} is not an SAE of this network (known: {known})", parameter=role
            )
        return node

    def _link_summary(self, links: Sequence[str]) -> dict[str, Any]:
        now = time.monotonic()
        views = [self.lsdb.view(x, now) for x in links]
        local = [self.links[x].status for x in links if x in self.links]
        out: dict[str, Any] = {
            "eavesdropper_alarm": any(v.alarm for v in views),
            "key_rate_bps": min((v.rate_bps for v in views), default=0.0),
            "last_qber": max((v.qber for v in views if v.qber is not None), default=None),
            "links": list(links),
            "down": [{"link": v.link, "reasons": list(v.reasons)} for v in views if not v.up],
        }
        out["qber_ewma"] = out["last_qber"]
        for st in local:
            if st is not None:
                for k in ("blocks_ok", "blocks_aborted", "last_abort_reason", "state"):
                    if k in st.link:
                        out.setdefault(k, st.link[k])
        return out

    def _static_path(self, dst: str) -> list[str]:
        import networkx as nx

        g = nx.Graph()
        g.add_edges_from((x.a, x.b, {"id": x.id}) for x in self.config.topology.links)
        try:
            path = nx.shortest_path(g, self.id, dst)
        except (nx.NetworkXNoPath, nx.NodeNotFound):
            return []
        return [str(g.edges[u, v]["id"]) for u, v in itertools.pairwise(path)]

    def _route_json(self, legs: tuple[tuple[str, ...], ...]) -> dict[str, Any]:
        """A route taken (the links of each node-disjoint leg) as the status extension gives
        a route: the first leg's nodes, links and fibre length, and the number of legs."""
        node = self.id
        nodes = [node]
        for lid in legs[0]:
            spec = self.config.topology.link(lid)
            node = spec.b if spec.a == node else spec.a
            nodes.append(node)
        return {
            "nodes": nodes,
            "links": list(legs[0]),
            "hops": len(legs[0]),
            "legs": len(legs),
            "distance_km": round(sum(self.config.topology.link(x).distance_km for x in legs[0]), 1),
        }

    def _status_extension(self, master: str, slave: str, dst: str) -> dict[str, Any]:
        need = self._limits.key_size // 8 + relay.MAC_KEY_BYTES
        decision = self.routes(dst, need) if dst != self.id else RouteDecision(())
        ext: dict[str, Any] = {}
        if dst == self.id:
            ext["route"] = {"nodes": [self.id], "links": [], "hops": 0, "legs": 0}
            ext["qkd_link"] = {"eavesdropper_alarm": False, "links": []}
        elif decision.ok:
            r = decision.routes
            ext["route"] = {
                "nodes": list(r[0].nodes),
                "links": list(r[0].links),
                "hops": len(r[0].links),
                "legs": len(r),
                "all": [list(x.nodes) for x in r],
                "distance_km": round(
                    sum(self.config.topology.link(x).distance_km for x in r[0].links), 1
                ),
            }
            ext["qkd_link"] = self._link_summary([x for rr in r for x in rr.links])
            ext["qkd_link"]["eavesdropper_alarm"] = False  # this route delivers good key
        else:
            ext["route"] = None
            ext["qkd_link"] = self._link_summary(self._static_path(dst))
            ext["no_route"] = decision.broken_text()
        p = self.pairs.get((master, slave))
        ext["relay"] = {
            "relays": p.relays if p else 0,
            "failures": p.failures if p else 0,
            "last_relay_ms": round(p.last_ms, 3) if p else None,
            "mean_relay_ms": round(p.total_ms / p.relays, 3) if p and p.relays else None,
            "last_routes": [list(x) for x in p.last_route] if p else [],
            "link_bits": dict(p.link_bits) if p else {},
            # what the relays took (the route above is the one the next relay would take)
            "routes_used": [
                {**self._route_json(legs), "relays": n}
                for legs, n in (p.routes_used.items() if p else ())
            ],
        }
        ext["network"] = {
            "down_links": [
                {"link": v.link, "reasons": list(v.reasons), "alarm": v.alarm}
                for v in self.lsdb.views(time.monotonic())
                if not v.up
            ],
        }
        return ext

    async def status(self, master: str, slave: str) -> Status:
        dst = self._peer_node(slave, "slave_SAE_ID")
        ext = self._status_extension(master, slave, dst)
        stock = 0
        if dst == self.id:
            stock = self.config.max_key_count
        elif ext["route"] is not None:
            now = time.monotonic()
            per_leg = []
            for nodes in ext["route"]["all"]:
                bits = []
                for u, v in itertools.pairwise(nodes):
                    lid = next(x.id for x in self.config.topology.links if {x.a, x.b} == {u, v})
                    bits.append(self.lsdb.view(lid, now).stock_bits.get(u, 0))
                per_leg.append(min(bits))
            stock = min(per_leg) // self._limits.key_size
        return Status(
            source_kme_id=self.id,
            target_kme_id=dst,
            master_sae_id=master,
            slave_sae_id=slave,
            stored_key_count=stock,
            max_key_count=self.config.max_key_count,
            limits=self._limits,
            status_extension=ext,
        )

    async def enc_keys(self, master: str, slave: str, req: KeyRequest) -> Sequence[Key]:
        dst = self._peer_node(slave, "slave_SAE_ID")
        expires = now_ms() + int(self.config.hold_seconds * 1000)
        if dst == self.id:
            keys = [HeldKey(uuid.uuid4(), os.urandom(req.size_bytes)) for _ in range(req.number)]
            self.store.issue_local(master, slave, keys, expires)
            return [(k.key_id, k.material) for k in keys]
        batch = self._batches.setdefault((master, slave, req.size), _Batch())
        fut: asyncio.Future[list[Key]] = asyncio.get_running_loop().create_future()
        batch.waiting.append((req.number, fut))
        if not batch.running:
            batch.running = True
            task = asyncio.create_task(self._relay_batches(master, slave, dst, req.size, batch))
            self._tasks.append(task)
            task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)
        return await fut

    async def _relay_batches(
        self, master: str, slave: str, dst: str, size: int, batch: _Batch
    ) -> None:
        """Relay what waits in `batch`, merged, until nothing does (requests arriving meanwhile
        wait for the next round). A merged relay that fails is retried request by request."""
        try:
            while batch.waiting:
                take: list[tuple[int, asyncio.Future[list[Key]]]] = []
                n = 0
                while batch.waiting and (
                    not take
                    or (
                        n + batch.waiting[0][0] <= relay.MAX_KEYS
                        and (n + batch.waiting[0][0]) * size // 8 <= BATCH_MAX_BYTES
                    )
                ):
                    take.append(batch.waiting.pop(0))
                    n += take[-1][0]
                take = [t for t in take if not t[1].done()]  # callers that went away
                if len(take) > 1:
                    try:
                        keys = await self._relay_retrying(
                            master, slave, dst, KeyRequest(sum(t[0] for t in take), size)
                        )
                    except EtsiError as e:
                        if not any(d.get("reason") == REASON_OUT_OF_KEYS for d in e.details):
                            for _, f in take:  # no route, relay failed: the same for each
                                if not f.done():
                                    f.set_exception(e)
                            continue
                        # out of keys: one at a time below, the merged size may be what failed
                    else:
                        for number, f in take:
                            if not f.done():
                                f.set_result(list(keys[:number]))
                            keys = keys[number:]
                        continue
                for number, f in take:
                    try:
                        got = await self._relay_retrying(
                            master, slave, dst, KeyRequest(number, size)
                        )
                    except Exception as e:  # EtsiError, or internal: the caller's 503
                        if not f.done():
                            f.set_exception(e)
                    else:
                        if not f.done():
                            f.set_result(list(got))
        except BaseException as e:
            for _, f in batch.waiting:
                if not f.done():
                    f.set_exception(EtsiError(503, f"key relay to {dst} stopped: {e!r}"))
            batch.waiting.clear()
            raise
        finally:
            batch.running = False
            if self._batches.get((master, slave, size)) is batch:
                del self._batches[(master, slave, size)]

    async def _relay_retrying(
        self, master: str, slave: str, dst: str, req: KeyRequest
    ) -> Sequence[Key]:
        deadline = time.monotonic() + self.config.relay_timeout
        last: EtsiError | None = None
        for _attempt in range(3):
            try:
                return await self._relay(master, slave, dst, req, deadline)
            except _RetryRelay as e:
                last = e.error
                if not e.retry or time.monotonic() > deadline - 1.0:
                    break
        assert last is not None
        raise last

    async def _relay(
        self, master: str, slave: str, dst: str, req: KeyRequest, deadline: float
    ) -> Sequence[Key]:
        need = req.number * req.size_bytes + relay.MAC_KEY_BYTES
        decision = self.routes(dst, need)
        if not decision.ok and self.routes(dst, 0).ok:
            # links are up, but they hold too little key for this request: out of keys
            ext = self._status_extension(master, slave, dst)
            short = [{"link": v.link, "stock_bits": v.stock_bits} for v in decision.broken]
            # a route with good links exists: this is a shortage, not an alarm
            link = {**ext["qkd_link"], "eavesdropper_alarm": False}
            raise EtsiError(
                503,
                MSG_OUT_OF_KEYS,
                [
                    {
                        "reason": REASON_OUT_OF_KEYS,
                        "qkd_link": link,
                        "needed_bits": 8 * need,
                        "short_links": short,
                    }
                ],
            )
        if not decision.ok:
            ext = self._status_extension(master, slave, dst)
            raise EtsiError(
                503,
                f"no route from {self.id} to {dst} with {self.config.multipath} node-disjoint "
                f"path(s) and enough key: {decision.broken_text()}",
                [
                    {
                        "reason": REASON_NO_ROUTE,
                        "qkd_link": ext["qkd_link"],
                        "broken_links": [
                            {"link": v.link, "reasons": list(v.reasons)} for v in decision.broken
                        ],
                    }
                ],
            )
        routes = decision.routes
        charged = self._charge_share(master, [(r.links[0], need) for r in routes])
        relay_id = uuid.uuid4()
        key_ids = tuple(uuid.uuid4() for _ in range(req.number))
        t_ms = now_ms()
        deadline_ms = t_ms + int(1000 * max(0.5, deadline - time.monotonic()))
        spends = [Spend(r.links[0], self.id, need) for r in routes]
        try:
            slices = self.store.begin_relay(
                RelayOut(relay_id, master, slave, dst, key_ids, "pending", deadline_ms), spends
            )
        except OutOfLinkKey as e:
            if self.shares is not None:
                self.shares.refund(master, charged)
            raise EtsiError(
                503,
                MSG_OUT_OF_KEYS,
                [
                    {
                        "reason": REASON_OUT_OF_KEYS,
                        "link": e.link,
                        "needed_bytes": e.need,
                        "stock_bytes": e.have,
                    }
                ],
            ) from None
        ack_url = self.config.node_urls[self.id] + "/kmapi/v1/ext_keys/ack"
        headers = [
            RelayHeader(
                relay_id,
                key_ids,
                req.size_bytes,
                self.id,
                dst,
                master,
                slave,
                r.nodes,
                1,
                leg,
                len(routes),
                r.links[0],
                s.start,
                deadline_ms,
                ack_url,
            )
            for leg, (r, s) in enumerate(zip(routes, slices, strict=True))
        ]
        shares = [relay.hop1_keys(h, s.material) for h, s in zip(headers, slices, strict=True)]
        keys = relay.combine_shares(shares)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Ack] = loop.create_future()
        self._waiting[relay_id] = _Waiting(fut, {n for r in routes for n in r.nodes}, dst)
        self.counters["relays_started"] += 1
        t0 = time.perf_counter()
        try:
            for h, s in zip(headers, slices, strict=True):
                self.links[h.link].in_flight[s.start] = 1
                self._spent(self.links[h.link])
            sends = [
                self._send_hop(relay.seal(h, None, s.material))
                for h, s in zip(headers, slices, strict=True)
            ]
            replies = await asyncio.gather(*sends)
            errors = [e for e, _ in replies if e is not None]
            for h, s in zip(headers, slices, strict=True):
                self.links[h.link].in_flight.pop(s.start, None)
            # a leg that went straight to the target: the target's reply is its ack (one hop:
            # one node-to-node request in all, no ack message, no outbox)
            ack = (
                None
                if errors
                else _ack_in_reply(
                    relay_id,
                    key_ids,
                    [st for (_, st), h in zip(replies, headers, strict=True) if h.is_last],
                )
            )
            if not errors and ack is None:
                with contextlib.suppress(TimeoutError):
                    ack = await asyncio.wait_for(fut, max(0.05, deadline - time.monotonic()))
        finally:
            self._waiting.pop(relay_id, None)
        ms = 1000 * (time.perf_counter() - t0)
        stats = self.pairs.setdefault((master, slave), PairStats())
        if (
            ack is not None
            and ack.status is AckStatus.RELAYED
            and self.store.deliver_relay(relay_id)
        ):
            stats.relays += 1
            stats.last_ms, stats.total_ms = ms, stats.total_ms + ms
            stats.last_route = tuple(r.nodes for r in routes)
            taken = tuple(r.links for r in routes)
            if taken in stats.routes_used or len(stats.routes_used) < MAX_ROUTES_KEPT:
                stats.routes_used[taken] = stats.routes_used.get(taken, 0) + 1
            for r in routes:
                for lid in r.links:
                    stats.link_bits[lid] = stats.link_bits.get(lid, 0) + 8 * need
            self.counters["relays_delivered"] += 1
            log(
                _LOG,
                logging.DEBUG,
                "relay_delivered",
                relay_id=str(relay_id),
                ms=round(ms, 2),
                routes=[list(r.nodes) for r in routes],
                key_IDs=[str(k) for k in key_ids],
            )
            return list(zip(key_ids, keys, strict=True))
        self.store.void_relay(relay_id, deadline_ms + 60_000)
        self._wake_voids.set()
        stats.failures += 1
        self.counters["relays_failed"] += 1
        why = (
            errors[0]
            if errors
            else (
                f"{ack.status.value}: {ack.reason}"
                if ack is not None
                else f"no acknowledgement from {dst} within {self.config.relay_timeout:g} s"
            )
        )
        log(
            _LOG,
            logging.WARNING,
            "relay_failed",
            relay_id=str(relay_id),
            reason=why,
            routes=[list(r.nodes) for r in routes],
        )
        failed = ack is not None and ack.status is AckStatus.FAILED
        raise _RetryRelay(
            EtsiError(
                503,
                f"key relay to {dst} failed ({why}); retry later",
                [{"reason": REASON_RELAY_FAILED}],
            ),
            retry=bool(errors) or failed,
        )

    def _charge_share(self, master: str, needs: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """Charge a relay to ``master``'s share of the stock of each first link, or refuse it
        (503, reason out_of_keys, ``quota`` sae_stock_share in the details, with the share)."""
        if self.shares is None:
            return needs
        refusal = self.shares.draw(
            master, [(lid, need, self.store.stock_bytes(lid, self.id)) for lid, need in needs]
        )
        if refusal is not None:
            raise EtsiError(
                503,
                f"{MSG_OUT_OF_KEYS}: {refusal.text()}",
                [{"reason": REASON_OUT_OF_KEYS, **refusal.details()}],
            )
        return needs

    def held_quota_bits(self) -> int:
        """Most uncollected key one (master, slave) pair may hold at this node: the configured
        quota, capped by one local SAE's share of a link's stock cap (a pair cannot park more
        than its slave's share of what a link could supply)."""
        share = (
            self.config.max_key_count
            * self._limits.key_size
            // max(1, len(self.config.local_saes()))
        )
        return min(share, self.config.quota_bits_per_pair)

    async def _send_hop(self, m: HopMessage) -> tuple[str | None, str]:
        """POST one hop: (None, the reply's status) once the next node accepted it, else
        (the error text, "")."""
        h = m.header
        try:
            reply = await self._post(h.receiver, "/kmapi/v1/ext_keys", relay.encode_hop(m))
        except NodeUnreachable as e:
            return f"hop {h.sender} -> {h.receiver} refused: {e}", ""
        return None, str(reply.get("status", ""))

    # -- relay handlers (node API) --------------------------------------------------------------
    async def h_ext_keys(self, request: web.Request) -> web.Response:
        obj = await self._node_body(request)
        caller = self._node_caller(request)
        try:
            m = relay.decode_hop(obj)
        except RelayFormatError as e:
            raise etsi014.bad_request(f"bad ext_keys message: {e}") from None
        h = m.header
        if h.receiver != self.id or h.sender != caller:
            raise EtsiError(401, "this hop is not from the route's previous node to this node")
        link = self.links.get(h.link)
        if link is None or link.neighbour != caller:
            raise etsi014.bad_request(f"link {h.link} does not join {caller} and {self.id}")
        if h.ack_url != self.config.node_urls.get(h.initiator_node, "") + "/kmapi/v1/ext_keys/ack":
            raise etsi014.bad_request("ack_callback_url is not the initiator node's")
        if h.deadline_ms < now_ms():
            raise EtsiError(503, "relay deadline passed")
        incoming = (h.link, caller, h.pad_start, h.slice_length)
        try:
            sl = self.store.peek(*incoming)
        except SliceUnavailable as e:
            self.counters["hops_refused"] += 1
            raise etsi014.bad_request(f"key not present: {e}") from None
        try:
            keys = relay.open_hop(m, sl)
        except RelayFormatError as e:
            self.store.burn(*incoming)
            self.counters["hops_refused"] += 1
            raise etsi014.bad_request(str(e)) from None
        link.bits_spent_payload += 8 * h.total
        link.bits_spent_auth += 8 * relay.MAC_KEY_BYTES
        if self.recorder is not None:
            self.recorder.view(
                relay_id=str(h.relay_id),
                leg=h.leg,
                legs=h.legs,
                key_ids=[str(k) for k in h.key_ids],
                keys=[k.hex() for k in keys],
                route=list(h.route),
            )
        if h.is_last:
            self._spent(link)
            return self._final_hop(h, incoming, keys)
        nxt = h.route[h.hop + 1]
        out_link = next((x for x in self.links.values() if x.neighbour == nxt), None)
        if out_link is None:
            raise etsi014.bad_request(f"{self.id} has no link to {nxt}")
        if not out_link.synced:
            raise EtsiError(503, f"link {out_link.spec.id} is not in sync yet")
        try:
            _, out = self.store.forward(incoming, Spend(out_link.spec.id, self.id, h.slice_length))
        except SliceUnavailable as e:
            raise etsi014.bad_request(f"key not present: {e}") from None
        except OutOfLinkKey as e:
            raise EtsiError(
                503,
                f"{MSG_OUT_OF_KEYS} (link {e.link})",
                [{"reason": REASON_OUT_OF_KEYS, "link": e.link}],
            ) from None
        out_link.in_flight[out.start] = 1
        self._spent(out_link)
        self._spent(link)
        msg = relay.seal(h.next_hop(out_link.spec.id, out.start), keys, out.material)
        self.counters["hops_forwarded"] += 1
        self._spawn_hop(msg, out_link, out.start)
        return json_response(202, {"status": "accepted"})

    def _spent(self, link: LocalLink) -> None:
        """A relay spent key on `link`: wake its transmitter side to draw more once the stock
        is a quarter below the cap (then it draws a batch), not after every relay."""
        if link.transmitter:
            lid, cap = link.spec.id, self._cap_bytes()
            if min(self.store.stock_bytes(lid, o) for o in (link.spec.a, link.spec.b)) <= (
                cap - cap // 4
            ):
                link.wake.set()
        bucket = (8 * self.store.stock_bytes(link.spec.id, self.id)).bit_length()
        if self._spent_bucket.get(link.spec.id) != bucket:  # not every relay: the LSA flood
            self._spent_bucket[link.spec.id] = bucket  # looks at the stock to a factor of two
            self._lsa_changed()

    def _spawn_hop(self, msg: HopMessage, out_link: LocalLink, start: int) -> None:
        async def run() -> None:
            err, _ = await self._send_hop(msg)
            out_link.in_flight.pop(start, None)
            out_link.bits_spent_payload += 8 * msg.header.total
            out_link.bits_spent_auth += 8 * relay.MAC_KEY_BYTES
            if err is not None:
                h = msg.header
                await self._post_quiet(
                    h.initiator_node,
                    "/kmapi/v1/ext_keys/ack",
                    relay.encode_ack(Ack(h.relay_id, h.key_ids, AckStatus.FAILED, err)),
                )

        task = asyncio.create_task(run())
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    def _final_hop(
        self, h: RelayHeader, incoming: tuple[str, str, int, int], shares: list[bytes]
    ) -> web.Response:
        f = FinalHop(
            h.relay_id,
            h.key_ids,
            h.leg,
            h.legs,
            h.initiator_sae,
            h.target_sae,
            h.initiator_node,
            h.ack_url,
            tuple(shares),
            h.deadline_ms,
            now_ms() + int(self.config.hold_seconds * 1000),
            self.held_quota_bits(),
            ack_in_reply=h.hop == 1,
        )
        if h.target_sae not in self.config.local_saes():
            raise etsi014.bad_request(f"SAE {h.target_sae} is not at node {self.id}")
        if self.config.topology.sae_node(h.initiator_sae) != h.initiator_node:
            raise etsi014.bad_request(
                f"SAE {h.initiator_sae} is not at the initiator node {h.initiator_node}"
            )
        try:
            outcome = self.store.accept_leg(incoming, f)
        except SliceUnavailable as e:
            raise etsi014.bad_request(f"key not present: {e}") from None
        if outcome is FinalOutcome.COMPLETE:
            self.counters["relays_received"] += 1
        if not f.ack_in_reply:
            self._wake_acks.set()
        return json_response(202, {"status": outcome.value})

    async def h_ack(self, request: web.Request) -> web.Response:
        obj = await self._node_body(request)
        caller = self._node_caller(request)
        try:
            ack = relay.decode_ack(obj)
        except RelayFormatError as e:
            raise etsi014.bad_request(f"bad ack: {e}") from None
        w = self._waiting.get(ack.relay_id)
        if w is None:
            state = self.store.relay_state(ack.relay_id)
            log(
                _LOG,
                logging.INFO,
                "late_ack",
                relay_id=str(ack.relay_id),
                status=ack.status.value,
                state=state,
                sender=caller,
            )
            if ack.status is AckStatus.VOIDED:
                self.counters["held_expired"] += 1
            return json_response(200, {"ok": True})
        if caller not in w.nodes or (ack.status is AckStatus.RELAYED and caller != w.target):
            raise EtsiError(401, "this node may not acknowledge that relay")
        if not w.future.done():
            w.future.set_result(ack)
        return json_response(200, {"ok": True})

    async def h_void(self, request: web.Request) -> web.Response:
        obj = await self._node_body(request)
        caller = self._node_caller(request)
        try:
            v = relay.decode_void(obj)
        except RelayFormatError as e:
            raise etsi014.bad_request(f"bad void: {e}") from None
        initiator = self.store.relay_initiator(v.relay_id)
        if initiator is not None and initiator != caller:
            raise EtsiError(401, "only the relay's initiator may void it")
        status = self.store.void_in(v.relay_id, v.until_ms)
        self.counters["voids_received"] += 1
        return json_response(200, {"key_ids": [str(k) for k in v.key_ids], "status": status.value})

    # -- outboxes ------------------------------------------------------------------------------
    @staticmethod
    def _retry_after(left: bool, retry: float | None) -> float | None:
        """An outbox's next look: on its event only when empty, else 0.5 s doubling to 10 s."""
        if not left:
            return None
        return 0.5 if not retry else min(2 * retry, 10.0)

    async def _ack_loop(self) -> None:
        retry: float | None = 0.0  # a restarted node sends what its outbox still holds
        while True:
            await self._sleep_or(self._wake_acks, retry)
            left = False
            for a in self.store.acks_out():
                try:
                    await self._post(
                        a.initiator_node,
                        "/kmapi/v1/ext_keys/ack",
                        relay.encode_ack(Ack(a.relay_id, a.key_ids, a.status, a.reason)),
                    )
                except NodeUnreachable as e:
                    if e.status == 401 or e.status == 400:
                        self.store.ack_done(a.relay_id)
                    else:
                        left = True
                    continue
                self.store.ack_done(a.relay_id)
            retry = self._retry_after(left, retry)

    async def _void_loop(self) -> None:
        retry: float | None = 0.0
        while True:
            await self._sleep_or(self._wake_voids, retry)
            left = False
            for v in self.store.voids_out():
                try:
                    await self._post(
                        v.target_node,
                        "/kmapi/v1/ext_keys/void",
                        relay.encode_void(relay.Void(v.relay_id, v.key_ids, v.until_ms)),
                    )
                except NodeUnreachable:
                    left = True
                    continue
                self.store.void_done(v.relay_id)
                self.counters["voids_sent"] += 1
            retry = self._retry_after(left, retry)

    async def _expire_loop(self) -> None:
        """Held keys expire within a tenth of ``hold_seconds`` (at most 30 s) of their time."""
        period = min(30.0, self.config.hold_seconds / 10)
        while True:
            await asyncio.sleep(self._jittered(period))  # (local work only: not counted)
            for rid, node, kids in self.store.expire(now_ms()):
                self.counters["held_expired"] += len(kids)
                log(_LOG, logging.INFO, "held_keys_expired", relay_id=str(rid), keys=len(kids))
                if node != self.id:
                    await self._post_quiet(
                        node,
                        "/kmapi/v1/ext_keys/ack",
                        relay.encode_ack(
                            Ack(
                                rid,
                                kids,
                                AckStatus.VOIDED,
                                "expired before the slave SAE collected it",
                            )
                        ),
                    )

    async def dec_keys(
        self, slave: str, master: str, key_ids: Sequence[uuid.UUID]
    ) -> Sequence[Key]:
        try:
            keys = self.store.take_held(master, slave, key_ids)
        except KeysNotFound:
            raise etsi014.bad_request(etsi014.MSG_NOT_FOUND) from None
        return [(k.key_id, k.material) for k in keys]

    # -- HTTP plumbing ---------------------------------------------------------------------------
    async def _post(self, peer: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        client = self.peers.get(peer)
        if client is None:
            if peer not in self._peer_ids:
                raise NodeUnreachable(f"no URL for node {peer}")
            client = self.peers[peer] = NodeClient(
                peer, self.config.node_urls[peer], self.config.node_api.tls, self.recorder
            )
        try:
            return await client.post(path, body)
        except NodeUnreachable as e:
            if e.status == 0:  # no answer at all: is the neighbour still there? sync now
                for link in self.links.values():
                    if link.neighbour == peer and link.transmitter and path != "/kms/v1/link/sync":
                        link.poke.set()
            raise

    def _node_caller(self, request: web.Request) -> str:
        cn = caller_id(request)
        if cn is None or cn not in self._peer_ids:
            raise EtsiError(401, "node endpoints are for the nodes of this network only")
        return cn

    async def _node_body(self, request: web.Request) -> dict[str, Any]:
        self._node_caller(request)
        if request.content_length is not None and request.content_length > MAX_NODE_BODY:
            raise etsi014.bad_request("message too large")
        return etsi014.parse_json_object(await request.read(), MAX_NODE_BODY)

    def _link_from(
        self, obj: dict[str, Any], request: web.Request, transmitter_caller: bool = False
    ) -> LocalLink:
        caller = self._node_caller(request)
        link = self.links.get(str(obj.get("link")))
        if link is None or link.neighbour != caller:
            raise EtsiError(401, "that link does not join the caller and this node")
        if transmitter_caller and link.spec.a != caller:
            raise EtsiError(401, "only the transmitter side announces or syncs on a link")
        return link

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
                "role": "transmitter" if link.transmitter else "receiver",
                "synced": link.synced,
                "neighbour_ok": link.neighbour_ok,
                "report": _report_json(link.report(8 * self.store.stock_bytes(lid, self.id))),
                "stock_bits": {
                    o: 8 * self.store.stock_bytes(lid, o) for o in (link.spec.a, link.spec.b)
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
            "held_keys": self.store.held_count(),
            "pending_relays": self.store.pending_relays(),
            "pairs": {
                f"{m}->{s}": {
                    "relays": p.relays,
                    "failures": p.failures,
                    "last_ms": round(p.last_ms, 3),
                    "mean_ms": round(p.total_ms / p.relays, 3) if p.relays else None,
                    "routes": [list(r) for r in p.last_route],
                    "link_bits": p.link_bits,
                }
                for (m, s), p in self.pairs.items()
            },
        }

    def _sae_app(self) -> web.Application:
        return guarded_app(self.api)

    def _node_app(self) -> web.Application:
        app = guarded_app(self.api, client_max_size=MAX_NODE_BODY, etsi_routes=False)
        r = app.router
        r.add_post("/kms/v1/link/announce", self.h_announce)
        r.add_post("/kms/v1/link/sync", self.h_sync)
        r.add_post("/kms/v1/lsa", self.h_lsa)
        r.add_post("/kmapi/v1/ext_keys", self.h_ext_keys)
        r.add_post("/kmapi/v1/ext_keys/ack", self.h_ack)
        r.add_post("/kmapi/v1/ext_keys/void", self.h_void)
        r.add_get("/kms/v1/state", self.h_state, allow_head=False)
        return app


def _flags(lsa: Lsa) -> list[tuple[str, bool, bool, bool]]:
    """What makes an LSA urgent: a link up or down, an alarm, key there or none."""
    return sorted((r.link, r.up, r.alarm, r.stock_bits > 0) for r in lsa.links)


def _ack_in_reply(
    relay_id: uuid.UUID, key_ids: tuple[uuid.UUID, ...], statuses: Sequence[str]
) -> Ack | None:
    """The ack that the target's replies to legs sent straight to it amount to, if any."""
    if FinalOutcome.COMPLETE.value in statuses:
        return Ack(relay_id, key_ids, AckStatus.RELAYED)
    if FinalOutcome.QUOTA.value in statuses:
        return Ack(
            relay_id,
            key_ids,
            AckStatus.FAILED,
            "the slave SAE's pair holds too much key not yet collected",
        )
    return None


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


class _RetryRelay(Exception):
    def __init__(self, error: EtsiError, retry: bool) -> None:
        super().__init__(error.message)
        self.error = error
        self.retry = retry


__all__ = ["KmsNode", "StoreError"]
