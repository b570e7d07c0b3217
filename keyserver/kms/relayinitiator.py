"""The relay agent, initiator side: drives :class:`keyserver.kms.relaymachine.InitiatorRelay`.

:meth:`RelayInitiator.request` (from the SAE service's ``enc_keys`` for a slave SAE at another
node): enc_keys requests of one SAE pair and key size queue behind the relay in flight and go
together as the next one. A relay picks node-disjoint routes with enough key (link-state
agent), charges the master SAE's share of each first link, **journals the relay and spends the
first links in one store transaction**, and only then sends the hop-1 messages the machine made
from those slices (``POST /kmapi/v1/ext_keys`` to each route's second node, where
:mod:`keyserver.kms.relayreceiver` takes over). The target's reply, or its ack
(``POST /kmapi/v1/ext_keys/ack``, :meth:`RelayInitiator.h_ack`), or the deadline decide:
acknowledged and still pending in the store, the keys go to the master SAE; anything else voids
the relay, and the void outbox tells the target (``/kmapi/v1/ext_keys/void``) until it answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from keyserver.etsi014 import messages as etsi014
from keyserver.etsi014.key import Key
from keyserver.etsi014.messages import EtsiError, KeyRequest
from keyserver.etsi014.server import json_response
from keyserver.jsonlog import log
from keyserver.kms import directkey, relay, relaymachine
from keyserver.kms.linkkeystore import OutOfLinkKey, Spend
from keyserver.kms.linkmanager import LinkManager
from keyserver.kms.linkstate import LinkStateAgent
from keyserver.kms.nodeclient import NodeUnreachable
from keyserver.kms.nodecontext import NodeContext, now_ms
from keyserver.kms.nodestore import NodeStore
from keyserver.kms.relay import Ack, AckStatus, HopMessage, RelayFormatError
from keyserver.kms.relayjournal import RelayOut
from keyserver.kms.relaymachine import (
    AwaitAck,
    Commit,
    Delivered,
    Failed,
    HopReply,
    HopStatus,
    InitiatorRelay,
)
from keyserver.kms.routing import Route, RouteDecision
from keyserver.kms.stockshare import StockShares

_LOG = logging.getLogger("keyserver.kms.node")
MSG_OUT_OF_KEYS = "not enough key material available on KME; retry later"
# ETSI GS QKD 014 defines no error codes; these go in an error's details so that clients can
# tell a transient shortage from other failures without reading the message text
REASON_OUT_OF_KEYS = "out_of_keys"
REASON_NO_ROUTE = "no_route"
REASON_RELAY_FAILED = "relay_failed"  # voided at both ends; a new request may succeed
MAX_ROUTES_KEPT = 32  # distinct routes counted per SAE pair in the status extension
HOP_PATH = "/kmapi/v1/ext_keys"
ACK_PATH = "/kmapi/v1/ext_keys/ack"
VOID_PATH = "/kmapi/v1/ext_keys/void"


@dataclass
class PairStats:
    relays: int = 0  # enc_keys requests served: relayed, or one hop direct (no relay message)
    failures: int = 0
    direct_keys: int = 0  # keys of those given as one-hop direct keys (kms/directkey.py)
    last_ms: float = 0.0
    total_ms: float = 0.0
    last_route: tuple[tuple[str, ...], ...] = ()
    link_bits: dict[str, int] = field(default_factory=dict)
    # relays delivered per route taken (its legs' links; at most MAX_ROUTES_KEPT routes)
    routes_used: dict[tuple[tuple[str, ...], ...], int] = field(default_factory=dict)


@dataclass
class _Waiting:
    """A relay this node started, waiting for its ack (set by ``h_ack``)."""

    relay: InitiatorRelay
    future: asyncio.Future[Ack]


@dataclass
class _Batch:
    """enc_keys requests of one (master, slave, key size) waiting for the relay in flight: they
    go together as the next relay (one transaction and one hop message per node for all)."""

    waiting: list[tuple[int, asyncio.Future[list[Key]]]] = field(default_factory=list)
    running: bool = False


class _RelayFailed(Exception):
    def __init__(self, error: EtsiError, failed: Failed) -> None:
        super().__init__(error.message)
        self.error = error
        self.failed = failed


class RelayInitiator:
    def __init__(
        self,
        ctx: NodeContext,
        linkstate: LinkStateAgent,
        links: LinkManager,
        shares: StockShares | None,
    ) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self.linkstate = linkstate
        self.links = links
        self.shares = shares  # each local SAE's share of every link (kms/stockshare.py)
        self.pairs: dict[tuple[str, str], PairStats] = {}
        self._waiting: dict[uuid.UUID, _Waiting] = {}
        self._batches: dict[tuple[str, str, int], _Batch] = {}  # (master, slave, size) -> queue
        self._wake_voids = asyncio.Event()

    @property
    def store(self) -> NodeStore:
        return self.ctx.store

    def void_after_restart(self) -> None:
        """Relays a previous run of this node left pending are voided (their master SAE had
        its answer long ago, or none: the keys are never delivered)."""
        cfg = self.config
        voided = self.store.relays.void_pending(now_ms() + int(2 * cfg.relay_timeout * 1000))
        if voided:
            log(_LOG, logging.WARNING, "relays_voided_after_restart", count=voided)

    def start(self) -> None:
        self.ctx.spawn(self._void_loop())

    async def request(self, master: str, slave: str, dst: str, req: KeyRequest) -> list[Key]:
        """Keys for `master` shared with `slave` at node `dst`, relayed (queued with the other
        requests of the pair and size that wait for the relay in flight). A route of one hop
        gives a direct key instead (:meth:`direct`): no node-to-node message at all."""
        route = self._direct_route(dst, req)
        if route is not None:
            return self.direct(master, slave, route, req)
        batch = self._batches.setdefault((master, slave, req.size), _Batch())
        fut: asyncio.Future[list[Key]] = asyncio.get_running_loop().create_future()
        batch.waiting.append((req.number, fut))
        if not batch.running:
            batch.running = True
            self.ctx.spawn_transient(self._relay_batches(master, slave, dst, req.size, batch))
        return await fut

    def _direct_route(self, dst: str, req: KeyRequest) -> Route | None:
        """The route to `dst` if it is one link (one hop, one leg), direct keys are on, the link
        is in sync and its stream position fits a direct key ID; else None (relay)."""
        if not self.config.direct_one_hop or self.config.multipath != 1:
            return None
        if req.size_bytes > directkey.MAX_SIZE_BYTES or req.size_bytes < 1:
            return None
        decision = self.linkstate.routes(dst, req.number * directkey.slice_length(req.size_bytes))
        if not decision.ok or len(decision.routes) != 1 or len(decision.routes[0].links) != 1:
            return None
        lid = decision.routes[0].links[0]
        link = self.ctx.links.get(lid)
        if link is None or not link.synced:
            return None
        if self.store.link_keys.end(lid, self.ctx.id) > directkey.MAX_START:
            return None
        return decision.routes[0]

    def direct(self, master: str, slave: str, route: Route, req: KeyRequest) -> list[Key]:
        """One-hop direct keys: spend one slice of this node's stream on `lid` per key (a
        one-time MAC key and the key) and name it in the key ID; the cursor is committed before
        the keys are returned. The neighbour gives the same bytes to the slave SAE on dec_keys
        (:meth:`keyserver.kms.nodestore.NodeStore.take_keys`)."""
        ctx = self.ctx
        t0 = time.perf_counter()
        lid = route.links[0]
        one = directkey.slice_length(req.size_bytes)
        charged = self._charge_share(master, [(lid, req.number * one)])
        try:
            slices = self.store.link_keys.spend([Spend(lid, ctx.id, one)] * req.number)
        except OutOfLinkKey as e:
            raise self._out_of_link_key(master, charged, e) from None
        b = directkey.Binding(ctx.id, lid, master, slave)
        keys = [Key.of(*directkey.issue(b, s.start, s.material)) for s in slices]
        link = ctx.links[lid]
        link.bits_spent_payload += 8 * req.size_bytes * req.number
        link.bits_spent_auth += 8 * directkey.MAC_KEY_BYTES * req.number
        self.links.spent(link)
        stats = self.pairs.setdefault((master, slave), PairStats())
        stats.direct_keys += req.number
        self._count_delivered(stats, (route,), 1000 * (time.perf_counter() - t0), one * req.number)
        ctx.counters["direct_keys_issued"] += req.number
        if _LOG.isEnabledFor(logging.DEBUG):  # not even the key ID list otherwise
            log(
                _LOG,
                logging.DEBUG,
                "direct_keys_issued",
                link=lid,
                slave=slave,
                key_IDs=[str(k.key_id) for k in keys],
            )
        return keys

    @staticmethod
    def _count_delivered(stats: PairStats, routes: Sequence[Route], ms: float, need: int) -> None:
        """One enc_keys request served (relayed, or one hop direct): its time, route and bits."""
        stats.relays += 1
        stats.last_ms, stats.total_ms = ms, stats.total_ms + ms
        stats.last_route = tuple(r.nodes for r in routes)
        taken = tuple(r.links for r in routes)
        if taken in stats.routes_used or len(stats.routes_used) < MAX_ROUTES_KEPT:
            stats.routes_used[taken] = stats.routes_used.get(taken, 0) + 1
        for r in routes:
            for lid in r.links:
                stats.link_bits[lid] = stats.link_bits.get(lid, 0) + 8 * need

    async def _relay_batches(
        self, master: str, slave: str, dst: str, size: int, batch: _Batch
    ) -> None:
        """Relay what waits in `batch`, merged, until nothing does (requests arriving meanwhile
        wait for the next round). A merged relay that fails is retried request by request."""
        try:
            while batch.waiting:
                n = relaymachine.batch_take([number for number, _ in batch.waiting], size)
                take = batch.waiting[:n]
                del batch.waiting[:n]
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
        attempt = 0
        while True:
            try:
                return await self._relay(master, slave, dst, req, deadline)
            except _RelayFailed as e:
                if not relaymachine.retry_again(e.failed, attempt, time.monotonic(), deadline):
                    raise e.error from None
            attempt += 1

    def _no_route(self, dst: str, need: int, decision: RouteDecision) -> EtsiError:
        """Why no route will do: out of keys (links up, too little key) or no route."""
        links_up = self.linkstate.routes(dst, 0).ok
        one_key = self.config.limits.key_size // 8 + relay.MAC_KEY_BYTES
        view = self.linkstate.route_view(dst, one_key)
        if links_up:
            short = [{"link": v.link, "stock_bits": v.stock_bits} for v in decision.broken]
            # a route with good links exists: this is a shortage, not an alarm
            link = {**view["qkd_link"], "eavesdropper_alarm": False}
            return EtsiError(
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
        return EtsiError(
            503,
            f"no route from {self.ctx.id} to {dst} with {self.config.multipath} node-disjoint "
            f"path(s) and enough key: {decision.broken_text()}",
            [
                {
                    "reason": REASON_NO_ROUTE,
                    "qkd_link": view["qkd_link"],
                    "broken_links": [
                        {"link": v.link, "reasons": list(v.reasons)} for v in decision.broken
                    ],
                }
            ],
        )

    async def _relay(
        self, master: str, slave: str, dst: str, req: KeyRequest, deadline: float
    ) -> Sequence[Key]:
        ctx = self.ctx
        need = req.number * req.size_bytes + relay.MAC_KEY_BYTES
        decision = self.linkstate.routes(dst, need)
        if not decision.ok:
            raise self._no_route(dst, need, decision)
        routes = decision.routes
        charged = self._charge_share(master, [(r.links[0], need) for r in routes])
        relay_id = uuid.uuid4()
        key_ids = tuple(uuid.uuid4() for _ in range(req.number))
        deadline_ms = now_ms() + int(1000 * max(0.5, deadline - time.monotonic()))
        spends = [Spend(r.links[0], ctx.id, need) for r in routes]
        try:  # journaled before anything is sent: the store knows every relay on the wire
            slices = self.store.begin_relay(
                RelayOut(relay_id, master, slave, dst, key_ids, "pending", deadline_ms), spends
            )
        except OutOfLinkKey as e:
            raise self._out_of_link_key(master, charged, e) from None
        m = InitiatorRelay.journaled(
            relay_id=relay_id,
            key_ids=key_ids,
            size=req.size_bytes,
            node=ctx.id,
            target_node=dst,
            master=master,
            slave=slave,
            routes=routes,
            slices=[(s.start, s.material) for s in slices],
            deadline=deadline,
            deadline_ms=deadline_ms,
            ack_url=self.config.node_urls[ctx.id] + ACK_PATH,
            timeout_s=self.config.relay_timeout,
        )
        fut: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        self._waiting[relay_id] = _Waiting(m, fut)
        ctx.counters["relays_started"] += 1
        t0 = time.perf_counter()
        try:
            for msg in m.messages:
                link = ctx.links[msg.header.link]
                link.in_flight[msg.header.pad_start] = 1
                self.links.spent(link)
            replies = await asyncio.gather(*(send_hop(self.ctx, msg) for msg in m.messages))
            for msg in m.messages:
                ctx.links[msg.header.link].in_flight.pop(msg.header.pad_start, None)
            # a leg that went straight to the target: the target's reply is its ack (one hop:
            # one node-to-node request in all, no ack message, no outbox)
            step = m.on_replies(replies, time.monotonic())
            if isinstance(step, AwaitAck):
                try:
                    async with asyncio.timeout(step.seconds):
                        ack = await fut
                except TimeoutError:
                    step = m.on_timeout()
                else:
                    step = m.on_ack(ack)
        finally:
            self._waiting.pop(relay_id, None)
        ms = 1000 * (time.perf_counter() - t0)
        stats = self.pairs.setdefault((master, slave), PairStats())
        if isinstance(step, Commit):
            step = m.on_commit(self.store.relays.deliver(relay_id))
        if isinstance(step, Delivered):
            self._count_delivered(stats, routes, ms, need)
            ctx.counters["relays_delivered"] += 1
            log(
                _LOG,
                logging.DEBUG,
                "relay_delivered",
                relay_id=str(relay_id),
                ms=round(ms, 2),
                routes=[list(r.nodes) for r in routes],
                key_IDs=[str(k) for k in key_ids],
            )
            return list(step.keys)
        self.store.relays.void(relay_id, step.void_until_ms)
        self._wake_voids.set()
        stats.failures += 1
        ctx.counters["relays_failed"] += 1
        log(
            _LOG,
            logging.WARNING,
            "relay_failed",
            relay_id=str(relay_id),
            reason=step.reason,
            routes=[list(r.nodes) for r in routes],
        )
        raise _RelayFailed(
            EtsiError(
                503,
                f"key relay to {dst} failed ({step.reason}); retry later",
                [{"reason": REASON_RELAY_FAILED}],
            ),
            step,
        )

    def _out_of_link_key(
        self, master: str, charged: list[tuple[str, int]], e: OutOfLinkKey
    ) -> EtsiError:
        """A spend found too little link key: give ``master`` its charged share back and say
        which link (503, reason out_of_keys, with the need and the stock)."""
        if self.shares is not None:
            self.shares.refund(master, charged)
        detail = {
            "reason": REASON_OUT_OF_KEYS,
            "link": e.link,
            "needed_bytes": e.need,
            "stock_bytes": e.have,
        }
        return EtsiError(503, MSG_OUT_OF_KEYS, [detail])

    def _charge_share(self, master: str, needs: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """Charge a relay to ``master``'s share of the stock of each first link, or refuse it
        (503, reason out_of_keys, ``quota`` sae_stock_share in the details, with the share)."""
        if self.shares is None:
            return needs
        refusal = self.shares.draw(
            master,
            [
                (lid, need, self.store.link_keys.stock_bytes(lid, self.ctx.id))
                for lid, need in needs
            ],
        )
        if refusal is not None:
            raise EtsiError(
                503,
                f"{MSG_OUT_OF_KEYS}: {refusal.text()}",
                [{"reason": REASON_OUT_OF_KEYS, **refusal.details()}],
            )
        return needs

    async def h_ack(self, request: web.Request) -> web.Response:
        obj = await self.ctx.node_body(request)
        caller = self.ctx.node_caller(request)
        try:
            ack = relay.decode_ack(obj)
        except RelayFormatError as e:
            raise etsi014.bad_request(f"bad ack: {e}") from None
        w = self._waiting.get(ack.relay_id)
        if w is None:
            state = self.store.relays.state(ack.relay_id)
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
                self.ctx.counters["held_expired"] += 1
            return json_response(200, {"ok": True})
        if not w.relay.may_ack(caller, ack):
            raise EtsiError(401, "this node may not acknowledge that relay")
        if not w.future.done():
            w.future.set_result(ack)
        return json_response(200, {"ok": True})

    async def _void_loop(self) -> None:
        retry: float | None = 0.0
        while True:
            await self.ctx.sleep_or(self._wake_voids, retry)
            left = False
            for v in self.store.relays.voids_out():
                try:
                    await self.ctx.post(
                        v.target_node,
                        VOID_PATH,
                        relay.encode_void(relay.Void(v.relay_id, v.key_ids, v.until_ms)),
                    )
                except NodeUnreachable:
                    left = True
                    continue
                self.store.relays.void_done(v.relay_id)
                self.ctx.counters["voids_sent"] += 1
            retry = relaymachine.outbox_retry(left, retry)

    def pair_status(self, master: str, slave: str) -> dict[str, Any]:
        """The status extension's ``relay``: what the relays of this SAE pair took."""
        p = self.pairs.get((master, slave))
        return {
            "relays": p.relays if p else 0,
            "failures": p.failures if p else 0,
            "direct_keys": p.direct_keys if p else 0,
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

    def pairs_state(self) -> dict[str, Any]:
        """The node state's ``pairs``."""
        return {
            f"{m}->{s}": {
                "relays": p.relays,
                "failures": p.failures,
                "direct_keys": p.direct_keys,
                "last_ms": round(p.last_ms, 3),
                "mean_ms": round(p.total_ms / p.relays, 3) if p.relays else None,
                "routes": [list(r) for r in p.last_route],
                "link_bits": p.link_bits,
            }
            for (m, s), p in self.pairs.items()
        }

    def _route_json(self, legs: tuple[tuple[str, ...], ...]) -> dict[str, Any]:
        """A route taken (the links of each node-disjoint leg) as the status extension gives
        a route: the first leg's nodes, links and fibre length, and the number of legs."""
        topo = self.config.topology
        node = self.ctx.id
        nodes = [node]
        for lid in legs[0]:
            spec = topo.link(lid)
            node = spec.b if spec.a == node else spec.a
            nodes.append(node)
        return {
            "nodes": nodes,
            "links": list(legs[0]),
            "hops": len(legs[0]),
            "legs": len(legs),
            "distance_km": round(sum(topo.link(x).distance_km for x in legs[0]), 1),
        }


async def send_hop(ctx: NodeContext, m: HopMessage) -> HopReply:
    """POST one hop: no error and the reply's status once the next node accepted it, else the
    error text."""
    h = m.header
    try:
        reply = await ctx.post(h.receiver, HOP_PATH, relay.encode_hop(m))
    except NodeUnreachable as e:
        return HopReply(f"hop {h.sender} -> {h.receiver} refused: {e}")
    return HopReply(None, HopStatus.parse(reply.get("status")))
