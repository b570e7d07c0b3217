"""The link-state agent: floods this node's LSA, passes on its neighbours', and finds routes.

An LSA (:mod:`keyserver.kms.routing`) says of each of the node's links whether it is up (and
why not), its alarm, QBER, key rate and the node's stock on it. This agent floods the node's own
LSA to its neighbours when it changes (at once when a link goes up or down, in batches when only
a stock or a key rate moved by a factor of two or 1.4), passes on what they send
(``POST /kms/v1/lsa``), hands a neighbour that comes back in sync every LSA it knows (as OSPF's
database exchange does when an adjacency forms, RFC 2328 section 10), and answers
"which node-disjoint routes to that node have enough key" from the link-state database
(:meth:`LinkStateAgent.routes`) with the summaries the SAE status extension shows.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Iterable, Sequence
from typing import Any

from aiohttp import web

from keyserver.etsi014 import messages as etsi014
from keyserver.etsi014.messages import EtsiError
from keyserver.etsi014.server import json_response
from keyserver.kms.nodecontext import NodeContext, now_ms
from keyserver.kms.nodestore import NodeStore
from keyserver.kms.routing import (
    LinkReport,
    LinkStateDb,
    Lsa,
    LsaFormatError,
    RouteDecision,
    lsa_from_json,
    lsa_to_json,
)

ROUTE_CACHE_S = 0.1  # a route found serves the requests of the next 100 ms (see routes())
LSA_PATH = "/kms/v1/lsa"
MAX_LSAS_PER_POST = 256  # what h_lsa accepts in one message; a longer list goes in several


class LinkStateAgent:
    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.config = ctx.config
        topo = ctx.config.topology
        self.lsdb = LinkStateDb(
            ((x.id, x.a, x.b) for x in topo.links), topo.node_ids(), ctx.config.lsa_max_age
        )
        self.wake = asyncio.Event()  # something an LSA says may have changed
        self._urgent = False  # ... and it is a link going up or down: flood it at once
        self._queue: dict[str, dict[str, Lsa]] = {}  # neighbour -> origin -> LSA to pass on
        self._asks: set[str] = set()  # neighbours to ask for their whole database
        self._route_cache: dict[str, tuple[float, int, RouteDecision]] = {}  # dst -> (t, need, r)
        self._sent: dict[str, LinkReport] = {}  # link -> what this node last flooded of it

    @property
    def store(self) -> NodeStore:
        return self.ctx.store

    def own_lsa(self) -> Lsa:
        reports = tuple(
            link.report(8 * self.store.link_keys.stock_bytes(lid, self.ctx.id))
            for lid, link in sorted(self.ctx.links.items())
        )
        return Lsa(self.ctx.id, now_ms(), reports)

    def neighbour_up(self, neighbour: str) -> None:
        """The link to `neighbour` came into sync (either node started, restarted or came
        back): each may have missed floods, so send it every fresh LSA this node knows and
        ask it for its own (``resync``) with the next batch."""
        self._asks.add(neighbour)
        self._send_database(neighbour)

    def _send_database(self, neighbour: str) -> None:
        now = time.monotonic()
        self.lsdb.update(self.own_lsa(), now)
        queue = self._queue.setdefault(neighbour, {})
        for lsa in self.lsdb.lsas():
            if lsa.origin != neighbour and self.lsdb.fresh(lsa.origin, now):
                queue.setdefault(lsa.origin, lsa)
        self.wake.set()

    def status_arrived(self, report: LinkReport) -> None:
        """A module status arrived for a link (`report`, its stock left out): wake the agent
        only if it moved what was last flooded of the link (up, alarm, the key rate by a factor
        of 1.4). A module that is
        filling its own store reports a block every few seconds; building the whole LSA for
        each would cost a hub node more than all else at rest. (The stock moves by draws and
        spends: :meth:`changed`.)"""
        if _moved(self._sent.get(report.link), report, stock=False):
            self.changed()

    def changed(self, urgent: bool = False) -> None:
        """What this node's LSA says may have changed (urgent: a link went up or down)."""
        self._urgent = self._urgent or urgent
        self.wake.set()

    async def run(self) -> None:
        """Flood this node's LSA when it changes, pass on what neighbours sent, refresh.

        A link going up or down (here or in an LSA received) is flooded at once, at most every
        ``lsa_interval`` seconds; a stock that moved by a factor of two and LSAs passed on go
        in batches at most every ``timers.lsa_batch`` seconds; with nothing changing, the own
        LSA is re-flooded every ``timers.lsa_refresh`` seconds (jittered), well within
        ``lsa_max_age``.
        """
        ctx = self.ctx
        t = self.config.timers
        last_flood = -1e9
        refresh_at = 0.0
        while True:
            now = time.monotonic()
            mine = self.own_lsa()
            self.lsdb.update(mine, now)
            own_due = now >= refresh_at or any(
                _moved(self._sent.get(r.link), r) for r in mine.links
            )
            forward = any(self._queue.values())
            if own_due or forward:
                urgent = (
                    self._urgent
                    or not self._sent
                    or _flags(self._sent.values()) != _flags(mine.links)
                )
                gap = self.config.lsa_interval if urgent else t.lsa_batch
                if now - last_flood < gap:
                    await ctx.sleep_or(self.wake, last_flood + gap - now)
                    continue  # look again: it may have become urgent meanwhile
                self._urgent = False
                last_flood = now
                if own_due:
                    self._sent = {r.link: r for r in mine.links}
                    refresh_at = now + ctx.jittered(t.lsa_refresh)
                    ctx.counters["lsa_floods"] += 1
                sends = []
                for n in sorted(ctx.neighbours()):
                    queued = self._queue.pop(n, {})
                    lsas = [mine] if own_due else []
                    lsas += queued.values()
                    ask = n in self._asks
                    self._asks.discard(n)
                    for i in range(0, len(lsas), MAX_LSAS_PER_POST):
                        body: dict[str, Any] = {
                            "lsas": [lsa_to_json(x) for x in lsas[i : i + MAX_LSAS_PER_POST]]
                        }
                        if ask and i == 0:
                            body["resync"] = True  # "send me every LSA you know"
                        ctx.counters["lsa_posts"] += 1
                        sends.append(ctx.post_quiet(n, LSA_PATH, body))
                await asyncio.gather(*sends)
                continue
            await ctx.sleep_or(self.wake, max(0.0, refresh_at - now))

    async def h_lsa(self, request: web.Request) -> web.Response:
        ctx = self.ctx
        obj = await ctx.node_body(request)
        caller = ctx.node_caller(request)
        if caller not in ctx.neighbours():
            raise EtsiError(401, "link-state advertisements come from neighbours only")
        raw = obj.get("lsas")
        resync = obj.get("resync", False)
        if (
            not set(obj) <= {"lsas", "resync"}
            or not isinstance(raw, list)
            or len(raw) > MAX_LSAS_PER_POST
            or not isinstance(resync, bool)
        ):
            raise etsi014.bad_request(
                f"an LSA message is {{lsas: at most {MAX_LSAS_PER_POST}, resync: boolean}}"
            )
        try:
            lsas = [lsa_from_json(x) for x in raw]
        except LsaFormatError as e:
            raise etsi014.bad_request(f"bad LSA: {e}") from None
        now = time.monotonic()
        for lsa in lsas:
            if lsa.origin == ctx.id:
                continue
            old = self.lsdb.fresh(lsa.origin, now)
            if self.lsdb.update(lsa, now):
                for n in ctx.neighbours() - {caller, lsa.origin}:
                    self._queue.setdefault(n, {})[lsa.origin] = lsa
                # a link went up or down: pass it on at once; anything else goes in a batch
                self.changed(urgent=old is None or _flags(old.links) != _flags(lsa.links))
        if resync:  # the neighbour came into sync with this node and may have missed floods
            self._send_database(caller)
        return json_response(200, {"ok": True})

    # -- routes ----------------------------------------------------------------------------------
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
        decision = self.lsdb.routes(self.ctx.id, dst, 8 * need_bytes, self.config.multipath, now)
        if decision.ok:
            self._route_cache[dst] = (now, need_bytes, decision)
        else:
            self._route_cache.pop(dst, None)
        return decision

    def route_view(self, dst: str, need_bytes: int) -> dict[str, Any]:
        """The status extension's ``route``, ``qkd_link`` (and ``no_route``) towards another
        node, for a relay spending `need_bytes` on each link."""
        decision = self.routes(dst, need_bytes)
        ext: dict[str, Any] = {}
        topo = self.config.topology
        if decision.ok:
            r = decision.routes
            ext["route"] = {
                "nodes": list(r[0].nodes),
                "links": list(r[0].links),
                "hops": len(r[0].links),
                "legs": len(r),
                "all": [list(x.nodes) for x in r],
                "distance_km": round(sum(topo.link(x).distance_km for x in r[0].links), 1),
            }
            ext["qkd_link"] = self.link_summary([x for rr in r for x in rr.links])
            ext["qkd_link"]["eavesdropper_alarm"] = False  # this route delivers good key
        else:
            ext["route"] = None
            ext["qkd_link"] = self.link_summary(self._static_path(dst))
            ext["no_route"] = decision.broken_text()
        return ext

    def link_summary(self, links: Sequence[str]) -> dict[str, Any]:
        now = time.monotonic()
        views = [self.lsdb.view(x, now) for x in links]
        local = [self.ctx.links[x].status for x in links if x in self.ctx.links]
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

    def down_links(self) -> list[dict[str, Any]]:
        return [
            {"link": v.link, "reasons": list(v.reasons), "alarm": v.alarm}
            for v in self.lsdb.views(time.monotonic())
            if not v.up
        ]

    def leg_stock_bits(self, legs: Sequence[Sequence[str]]) -> int:
        """The least stock (bits) along the legs, each leg given by its nodes in order: this
        node's own stock as it is now, the others' as their LSAs say (this node's LSA in its
        database is only as new as the last flood or route search)."""
        now = time.monotonic()
        per_leg = []
        for nodes in legs:
            bits = []
            for u, v in itertools.pairwise(nodes):
                lid = next(x.id for x in self.config.topology.links if {x.a, x.b} == {u, v})
                if u == self.ctx.id:
                    bits.append(8 * self.store.link_keys.stock_bytes(lid, u))
                else:
                    bits.append(self.lsdb.view(lid, now).stock_bits.get(u, 0))
            per_leg.append(min(bits))
        return min(per_leg)

    def _static_path(self, dst: str) -> list[str]:
        import networkx as nx

        g = nx.Graph()
        g.add_edges_from((x.a, x.b, {"id": x.id}) for x in self.config.topology.links)
        try:
            path = nx.shortest_path(g, self.ctx.id, dst)
        except (nx.NetworkXNoPath, nx.NodeNotFound):
            return []
        return [str(g.edges[u, v]["id"]) for u, v in itertools.pairwise(path)]


RATE_STEP = 0.5  # log2 of the factor (about 1.4) by which a key rate must move to be flooded


def _moved(sent: LinkReport | None, now: LinkReport, stock: bool = True) -> bool:
    """Whether neighbours need to hear about a link again: up/down, alarm, the stock's bucket
    (a factor of two; bucket 0: no key at all, which :func:`_flags` makes urgent) or a key
    rate that moved by a factor of about 1.4 from the one flooded last. A caller judges an OTP
    call by the route's stock and its slowest link's rate, and in a big network the refresh
    that would otherwise carry a rate that moved comes only every few minutes. The rate is
    compared with the one *sent*, not put in fixed buckets: a module's rate over its last
    blocks wobbles by a few percent, and one near a bucket's edge would be flooded over and
    over."""
    if sent is None:
        return True
    if (sent.up, sent.alarm) != (now.up, now.alarm):
        return True
    if stock and sent.stock_bits.bit_length() != now.stock_bits.bit_length():
        return True
    return abs(math.log2((1.0 + now.rate_bps) / (1.0 + sent.rate_bps))) >= RATE_STEP


def _flags(reports: Iterable[LinkReport]) -> list[tuple[str, bool, bool, bool]]:
    """What makes an LSA (its link reports) urgent: a link up or down, an alarm, key there or
    none."""
    return sorted((r.link, r.up, r.alarm, r.stock_bits > 0) for r in reports)
