"""The key route of a call: which trusted nodes relayed its QKD keys, and what it cost each link.

A KMS node of qkd-keyserver reports, in the ``status_extension`` of its ETSI GS QKD 014 Status
for a (master SAE, slave SAE) pair, the route its next relay would take to the slave SAE's node
(``route``: nodes, links, hops, node-disjoint legs, fibre distance) and what it relayed for the
pair so far (``relay``: relays delivered and failed, their mean time, the link key each link
spent, and ``routes_used``: the relays delivered per route taken).  The report names the route
the call's relays took (from ``routes_used``), not the one the node would take at hang-up: the
node picks a route per request by the links' stock, so on a ring they may differ.  The caller,
the ETSI 014 master SAE whose node relays every key of the call, asks once before and once
after the call; :func:`route_report` turns the two into what the call used.

The extension is parsed strictly and bounded: a KME that does not report it (a vendor KME, or a
field of the wrong shape) gives no route, never an error.  The relay figures are the pair's: a
second call between the same two SAEs at the same time would be counted in both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_NODES = 256  # longer routes than this are not believed
MAX_NAME = 128


@dataclass(frozen=True)
class KeyRoute:
    """The route the caller's KMS node relays keys along (the first of ``legs`` disjoint ones)."""

    nodes: tuple[str, ...]
    links: tuple[str, ...]
    legs: int  # node-disjoint routes each relay uses (multipath: one key share per leg)
    distance_km: float | None

    @property
    def hops(self) -> int:
        return len(self.links)


@dataclass(frozen=True)
class RelayTotals:
    """The node's relay counters for one SAE pair at one moment."""

    relays: int
    failures: int
    total_ms: float
    link_bits: Mapping[str, int]
    routes_used: Mapping[KeyRoute, int]  # relays delivered per route taken (empty: unknown)


@dataclass(frozen=True)
class RouteReport:
    """What one call used of the key network (the caller's view)."""

    route: KeyRoute | None  # the route the relays took (the most used, if several)
    key_requests: int  # relays delivered during the call (one per enc_keys request)
    failed_requests: int
    relay_ms_mean: float | None  # time per key request, from the KMS node's own clock
    link_bits: dict[str, int]  # link key spent on each link during the call
    # relays per route taken during the call, most used first (empty: the node did not say,
    # or no key was relayed; then ``route`` is the one the node would take now)
    routes_used: tuple[tuple[KeyRoute, int], ...] = ()

    def to_json(self) -> dict[str, Any]:
        r = self.route
        return {
            "nodes": list(r.nodes) if r else None,
            "links": list(r.links) if r else None,
            "hops": r.hops if r else None,
            "legs": r.legs if r else None,
            "distance_km": r.distance_km if r else None,
            "key_requests": self.key_requests,
            "failed_requests": self.failed_requests,
            "relay_ms_mean": self.relay_ms_mean,
            "link_bits": dict(self.link_bits),
            "routes_used": [
                {"nodes": list(x.nodes), "hops": x.hops, "legs": x.legs, "relays": n}
                for x, n in self.routes_used
            ],
        }

    def describe(self) -> str:
        """One line: the route and its cost."""
        r = self.route
        where = (
            f"{' -> '.join(r.nodes)} ({r.hops} hop{'s' if r.hops != 1 else ''}"
            + (f", {r.distance_km:g} km" if r.distance_km is not None else "")
            + (f", {r.legs} disjoint legs" if r.legs > 1 else "")
            + ")"
            if r
            else "route not reported by the KME"
        )
        if len(self.routes_used) > 1:
            others = len(self.routes_used) - 1
            where += f" for {self.routes_used[0][1]} of them, {others} other route(s) for the rest"
        relay = (
            f"{self.key_requests} key request(s) relayed, {self.relay_ms_mean:.0f} ms each"
            if self.relay_ms_mean is not None
            else f"{self.key_requests} key request(s) relayed"
        )
        if self.failed_requests:
            relay += f", {self.failed_requests} failed"
        spent, links = sum(self.link_bits.values()), len(self.link_bits)
        return f"key route {where}; {relay}; link key spent {spent} bits on {links} link(s)"

    def describe_routes(self) -> list[str]:
        """One line per route the relays took (when they took more than one)."""
        if len(self.routes_used) < 2:
            return []
        return [
            f"{' -> '.join(x.nodes)} ({x.hops} hops"
            + (f", {x.distance_km:g} km" if x.distance_km is not None else "")
            + f"): {n} key request(s)"
            for x, n in self.routes_used
        ]


def _name(v: Any) -> str | None:
    return v if isinstance(v, str) and 0 < len(v) <= MAX_NAME and v.isprintable() else None


def _names(v: Any) -> tuple[str, ...] | None:
    if not isinstance(v, list) or len(v) > MAX_NODES:
        return None
    out = tuple(_name(x) for x in v)
    return None if any(x is None for x in out) else tuple(x for x in out if x is not None)


def _count(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 62 else None


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if 0 <= v < 1e12 else None


def key_route(extension: Mapping[str, Any] | None) -> KeyRoute | None:
    """The route in a Status extension, or None if it is absent or malformed."""
    return _route((extension or {}).get("route"))


def _route(raw: Any) -> KeyRoute | None:
    if not isinstance(raw, dict):
        return None
    nodes, links = _names(raw.get("nodes")), _names(raw.get("links"))
    legs = _count(raw.get("legs"))
    if nodes is None or links is None or legs is None or len(nodes) != len(links) + 1:
        return None
    return KeyRoute(nodes, links, max(1, legs), _number(raw.get("distance_km")))


def relay_totals(extension: Mapping[str, Any] | None) -> RelayTotals | None:
    """The pair's relay counters in a Status extension, or None if absent or malformed."""
    raw = (extension or {}).get("relay")
    if not isinstance(raw, dict):
        return None
    relays, failures = _count(raw.get("relays")), _count(raw.get("failures"))
    mean = _number(raw.get("mean_relay_ms")) if raw.get("mean_relay_ms") is not None else 0.0
    bits = raw.get("link_bits")
    if relays is None or failures is None or mean is None or not isinstance(bits, dict):
        return None
    if len(bits) > MAX_NODES:
        return None
    link_bits: dict[str, int] = {}
    for k, v in bits.items():
        name, n = _name(k), _count(v)
        if name is None or n is None:
            return None
        link_bits[name] = n
    used = _routes_used(raw.get("routes_used"))
    if used is None:
        return None
    return RelayTotals(relays, failures, mean * relays, link_bits, used)


def _routes_used(raw: Any) -> dict[KeyRoute, int] | None:
    """``relay.routes_used``: a list of routes with a ``relays`` count (absent: empty)."""
    if raw is None:
        return {}
    if not isinstance(raw, list) or len(raw) > MAX_NODES:
        return None
    out: dict[KeyRoute, int] = {}
    for item in raw:
        route = _route(item)
        n = _count(item.get("relays")) if isinstance(item, dict) else None
        if route is None or n is None:
            return None
        out[route] = out.get(route, 0) + n
    return out


def route_report(
    before: Mapping[str, Any] | None, after: Mapping[str, Any] | None
) -> RouteReport | None:
    """What the call used between two Status extensions of the caller's KME (None: unknown)."""
    t0, t1 = relay_totals(before), relay_totals(after)
    route = key_route(after) or key_route(before)
    if t0 is None or t1 is None or t1.relays < t0.relays or t1.failures < t0.failures:
        return None if route is None else RouteReport(route, 0, 0, None, {})
    n = t1.relays - t0.relays
    spent = {k: v - t0.link_bits.get(k, 0) for k, v in t1.link_bits.items()}
    taken = {r: c - t0.routes_used.get(r, 0) for r, c in t1.routes_used.items()}
    used = tuple(sorted(((r, c) for r, c in taken.items() if c > 0), key=lambda rc: -rc[1]))
    return RouteReport(
        route=used[0][0] if used else route,
        routes_used=used,
        key_requests=n,
        failed_requests=t1.failures - t0.failures,
        relay_ms_mean=round((t1.total_ms - t0.total_ms) / n, 1) if n else None,
        link_bits={k: v for k, v in sorted(spent.items()) if v > 0},
    )
