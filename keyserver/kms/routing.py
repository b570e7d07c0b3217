"""Link state and route selection over the network graph (sans-I/O; graph algorithms by networkx).

Every node watches its own QKD links (its modules' status and its key stock on each link) and
floods a **link-state advertisement** (LSA) to its neighbours, who pass on what is new to them
(newest ``seq`` per origin wins; an LSA older than ``max_age`` counts as silence: the origin's
links are down). A link is **usable** from u to v when the fresh LSAs of *both* ends say it is
up and u's own stream on it holds the key the hop needs. Routes are shortest paths on the
directed graph of usable links (networkx Dijkstra) with

    cost(u -> v) = 1 + 10 * need_bits / stock_bits(u on the link) + 10^4 / (10^4 + rate_bps)

so hops are few, links low on key are avoided before they run dry and faster links are
preferred. Multipath takes k node-disjoint routes, shortest first (each route's inner nodes are
removed before the next is searched).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import networkx as nx


class DownReason(Enum):
    MODULE_UNREACHABLE = "module_unreachable"  # fibre cut / module process gone
    ABORTED = "aborted"  # the module's protocol aborted (QBER, key-rate bound)
    EAVESDROPPER = "eavesdropper"  # the module's eavesdropper alarm
    NOT_RUNNING = "not_running"  # the module is connecting / stopped
    NEIGHBOUR_UNREACHABLE = "neighbour_unreachable"  # the node at the other end is silent
    SYNCING = "syncing"  # the two nodes have not yet confirmed their stores agree
    NO_REPORT = "no_report"  # no fresh link-state advertisement from an end node


@dataclass(frozen=True)
class LinkReport:
    """What one end node says about one of its links."""

    link: str
    up: bool
    reason: DownReason | None
    alarm: bool
    qber: float | None
    rate_bps: float
    stock_bits: int  # the reporter's own (spendable) stream on this link
    module_state: str


@dataclass(frozen=True)
class Lsa:
    origin: str
    seq: int  # the origin's clock in ms when it issued the LSA (monotonic across restarts)
    links: tuple[LinkReport, ...]


@dataclass(frozen=True)
class LinkView:
    """One link as the local link-state database sees it now."""

    link: str
    a: str
    b: str
    up: bool
    reasons: tuple[str, ...]  # e.g. ("KME-A: eavesdropper",)
    alarm: bool
    qber: float | None
    rate_bps: float
    stock_bits: dict[str, int]  # per owner end


@dataclass(frozen=True)
class Route:
    nodes: tuple[str, ...]
    links: tuple[str, ...]
    cost: float


@dataclass(frozen=True)
class RouteDecision:
    routes: tuple[Route, ...]  # empty if none
    broken: tuple[LinkView, ...] = field(default=())  # unusable links (for the 503 message)

    @property
    def ok(self) -> bool:
        return bool(self.routes)

    def broken_text(self) -> str:
        if not self.broken:
            return "no link is reported down"
        return "; ".join(
            f"{v.link} ({', '.join(v.reasons) or 'too little key: ' + _stock(v)})"
            for v in self.broken
        )


def _stock(v: LinkView) -> str:
    return ", ".join(f"{o} holds {b} bits" for o, b in sorted(v.stock_bits.items()))


class LinkStateDb:
    """The LSAs a node knows, and the routes they allow."""

    def __init__(
        self, links: Iterable[tuple[str, str, str]], nodes: Iterable[str], max_age_s: float
    ) -> None:
        self._links = {lid: (a, b) for lid, a, b in links}
        self._nodes = list(nodes)
        self._max_age = max_age_s
        self._lsas: dict[str, tuple[Lsa, float]] = {}  # origin -> (lsa, received at, monotonic)

    def update(self, lsa: Lsa, now: float) -> bool:
        """Store `lsa` if newer than what we hold from its origin; True if it was new."""
        if lsa.origin not in self._nodes:
            return False
        old = self._lsas.get(lsa.origin)
        if old is not None and old[0].seq >= lsa.seq:
            return False
        self._lsas[lsa.origin] = (lsa, now)
        return True

    def lsas(self) -> list[Lsa]:
        return [lsa for lsa, _ in self._lsas.values()]

    def fresh(self, origin: str, now: float) -> Lsa | None:
        got = self._lsas.get(origin)
        if got is None or now - got[1] > self._max_age:
            return None
        return got[0]

    def _report(self, origin: str, link: str, now: float) -> LinkReport | None:
        lsa = self.fresh(origin, now)
        if lsa is None:
            return None
        return next((r for r in lsa.links if r.link == link), None)

    def view(self, link: str, now: float) -> LinkView:
        a, b = self._links[link]
        reasons: list[str] = []
        stock: dict[str, int] = {}
        alarm = False
        qber: float | None = None
        rate = 0.0
        for end in (a, b):
            r = self._report(end, link, now)
            if r is None:
                reasons.append(f"{end}: {DownReason.NO_REPORT.value}")
                stock[end] = 0
                continue
            stock[end] = r.stock_bits
            alarm = alarm or r.alarm
            if r.qber is not None:
                qber = r.qber if qber is None else max(qber, r.qber)
            rate = max(rate, r.rate_bps)
            if not r.up:
                reasons.append(f"{end}: {r.reason.value if r.reason else 'down'}")
        return LinkView(link, a, b, not reasons, tuple(reasons), alarm, qber, rate, stock)

    def views(self, now: float) -> list[LinkView]:
        return [self.view(lid, now) for lid in sorted(self._links)]

    def graph(self, need_bits: int, now: float) -> nx.DiGraph:
        g = nx.DiGraph()
        g.add_nodes_from(self._nodes)
        for v in self.views(now):
            if not v.up:
                continue
            for u, w in ((v.a, v.b), (v.b, v.a)):
                stock = v.stock_bits.get(u, 0)
                if stock < need_bits:
                    continue
                cost = 1.0 + 10.0 * need_bits / max(stock, 1) + 1e4 / (1e4 + v.rate_bps)
                g.add_edge(u, w, weight=cost, link=v.link)
        return g

    def routes(self, src: str, dst: str, need_bits: int, k: int, now: float) -> RouteDecision:
        """Up to `k` node-disjoint routes from src to dst for a hop that spends `need_bits`."""
        g = self.graph(need_bits, now)
        found: list[Route] = []
        for _ in range(k):
            try:
                path: Sequence[str] = nx.dijkstra_path(g, src, dst, weight="weight")
            except (nx.NetworkXNoPath, nx.NodeNotFound):
                break
            edges = list(itertools.pairwise(path))
            cost = sum(float(g.edges[e]["weight"]) for e in edges)
            found.append(Route(tuple(path), tuple(str(g.edges[e]["link"]) for e in edges), cost))
            if len(path) == 2:
                g.remove_edge(src, dst)  # a direct link can serve one leg only
                if g.has_edge(dst, src):
                    g.remove_edge(dst, src)
            g.remove_nodes_from(path[1:-1])
        if len(found) < k:
            broken = tuple(
                v
                for v in self.views(now)
                if not v.up or min(v.stock_bits.values(), default=0) < need_bits
            )
            return RouteDecision((), broken)
        return RouteDecision(tuple(found))


def lsa_to_json(lsa: Lsa) -> dict[str, Any]:
    return {
        "origin": lsa.origin,
        "seq": lsa.seq,
        "links": [
            {
                "link": r.link,
                "up": r.up,
                "reason": r.reason.value if r.reason else None,
                "alarm": r.alarm,
                "qber": r.qber,
                "rate_bps": r.rate_bps,
                "stock_bits": r.stock_bits,
                "module_state": r.module_state,
            }
            for r in lsa.links
        ],
    }


class LsaFormatError(ValueError):
    pass


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def lsa_from_json(obj: Any, max_links: int = 64) -> Lsa:
    if not isinstance(obj, dict) or set(obj) != {"origin", "seq", "links"}:
        raise LsaFormatError("an LSA is {origin, seq, links}")
    origin, seq, links = obj["origin"], obj["seq"], obj["links"]
    if not isinstance(origin, str) or len(origin) > 64:
        raise LsaFormatError("LSA origin must be a node ID")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise LsaFormatError("LSA seq must be a non-negative integer")
    if not isinstance(links, list) or len(links) > max_links:
        raise LsaFormatError("LSA links must be a short list")
    out = []
    fields = {"link", "up", "reason", "alarm", "qber", "rate_bps", "stock_bits", "module_state"}
    for r in links:
        if not isinstance(r, dict) or set(r) != fields:
            raise LsaFormatError(f"an LSA link report has exactly {sorted(fields)}")
        try:
            reason = None if r["reason"] is None else DownReason(r["reason"])
        except ValueError:
            raise LsaFormatError("unknown link-down reason") from None
        if not (
            isinstance(r["link"], str)
            and isinstance(r["up"], bool)
            and isinstance(r["alarm"], bool)
            and (r["qber"] is None or _num(r["qber"]))
            and _num(r["rate_bps"])
            and isinstance(r["stock_bits"], int)
            and not isinstance(r["stock_bits"], bool)
            and isinstance(r["module_state"], str)
            and len(r["module_state"]) < 32
        ):
            raise LsaFormatError("an LSA link report has a field of the wrong type")
        out.append(
            LinkReport(
                r["link"],
                r["up"],
                reason,
                r["alarm"],
                None if r["qber"] is None else float(r["qber"]),
                float(r["rate_bps"]),
                r["stock_bits"],
                r["module_state"],
            )
        )
    return Lsa(origin, seq, tuple(out))
