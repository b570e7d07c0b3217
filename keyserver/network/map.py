"""A picture of a QKD network: nodes by geography, links by key stock, rate and alarm, routes.

:func:`map_model` (pure) turns a topology, and optionally the live summary of
:mod:`keyserver.network.status`, into what to draw: where each node goes (its lat/lon on an
equirectangular projection, or a graph layout when the topology has no coordinates), which
nodes get a label (every node of a small network; cores, junctions and SAE sites of a large
one), each link's state and colour value, and the routes the SAE pairs' relays took.
:func:`draw` renders a model to a PNG with matplotlib (Agg backend), imported only there, so
nothing else in the package pays for it.
"""

from __future__ import annotations

import enum
import math
import textwrap
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from keyserver.topology import LinkSpec, NodeSpec, SaeSpec, Topology

LABEL_ALL_UP_TO = 30  # nodes: above this, only cores, junctions and SAE sites are labelled


class LinkState(enum.Enum):
    PLANNED = "planned"  # no live state: a plan-only map
    UP = "up"
    DOWN = "down"
    ALARM = "alarm"  # an eavesdropper alarm on the link


class NodeKind(enum.Enum):
    SITE = "site"
    CORE = "core"  # three links or more: a core site or a junction
    SAE = "sae"  # an SAE's node


@dataclass(frozen=True)
class MapNode:
    id: str
    x: float
    y: float
    kind: NodeKind
    label: str | None
    up: bool | None  # None: no live state


@dataclass(frozen=True)
class MapLink:
    id: str
    a: str
    b: str
    km: float
    state: LinkState
    stock_kbit: float | None  # the smaller of the two directions' stock
    rate_bps: float | None


@dataclass(frozen=True)
class MapModel:
    title: str
    lon_scale: float  # x = lon * lon_scale on a geographic map (0: a graph layout, no axes)
    nodes: tuple[MapNode, ...]
    links: tuple[MapLink, ...]
    routes: tuple[tuple[str, ...], ...]  # node sequences the relays took

    def node(self, node_id: str) -> MapNode:
        return next(n for n in self.nodes if n.id == node_id)


def positions(topology: Topology) -> tuple[dict[str, tuple[float, float]], float]:
    """(x, y) per node, and the longitude scale (cos of the mean latitude; 0: no coordinates,
    a graph layout)."""
    coords = [(n.lat, n.lon) for n in topology.nodes]
    if all(lat is not None and lon is not None for lat, lon in coords):
        mean_lat = sum(lat for lat, _ in coords if lat is not None) / len(coords)
        k = math.cos(math.radians(mean_lat))
        return {n.id: (float(n.lon or 0.0) * k, float(n.lat or 0.0)) for n in topology.nodes}, k
    import networkx as nx

    g = nx.Graph()
    g.add_nodes_from(topology.node_ids())
    g.add_edges_from((link.a, link.b) for link in topology.links)
    layout = nx.kamada_kawai_layout(g) if len(g) <= 200 else nx.spring_layout(g, seed=1)
    return {n: (float(p[0]), float(p[1])) for n, p in layout.items()}, 0.0


def _link_state(v: dict[str, Any]) -> LinkState:
    if v.get("alarm"):
        return LinkState.ALARM
    return LinkState.UP if v.get("up") else LinkState.DOWN


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or v != v:
        return None
    return float(v)


def map_model(topology: Topology, summary: dict[str, Any] | None = None) -> MapModel:
    """What to draw; `summary`: :func:`keyserver.network.status.summarise` of the live network."""
    pos, lon_scale = positions(topology)
    sae_at: dict[str, list[str]] = {}
    for s in topology.saes:
        sae_at.setdefault(s.node, []).append(s.id)
    degree = {n: len(topology.links_of(n)) for n in topology.node_ids()}
    label_all = len(topology.nodes) <= LABEL_ALL_UP_TO
    live_nodes = summary["nodes"] if summary else {}
    nodes = []
    for n in topology.nodes:
        kind = (
            NodeKind.SAE
            if n.id in sae_at
            else NodeKind.CORE
            if degree[n.id] >= 3
            else NodeKind.SITE
        )
        label = None
        if label_all or kind is not NodeKind.SITE:
            label = n.city + (f" ({', '.join(sae_at[n.id])})" if n.id in sae_at else "")
        up = live_nodes[n.id]["up"] if n.id in live_nodes else None
        nodes.append(MapNode(n.id, *pos[n.id], kind, label, up))
    live_links = summary["links"] if summary else {}
    links = []
    for link in topology.links:
        v = live_links.get(link.id)
        if v is None:
            links.append(
                MapLink(link.id, link.a, link.b, link.distance_km, LinkState.PLANNED, None, None)
            )
            continue
        stock = v.get("stock_bits") or {}
        values = [
            x for x in (_number(stock.get(link.a)), _number(stock.get(link.b))) if x is not None
        ]
        links.append(
            MapLink(
                link.id,
                link.a,
                link.b,
                link.distance_km,
                _link_state(v),
                min(values) / 1000 if values else None,
                _number(v.get("key_rate_bps")),
            )
        )
    known = set(topology.node_ids())
    routes = []
    for p in summary["pairs"].values() if summary else []:
        for r in p.get("routes", []):
            route = tuple(str(x) for x in r)
            if len(route) >= 2 and set(route) <= known and route not in routes:
                routes.append(route)
    km = topology.total_km()
    title = (
        f"{topology.name}: {len(topology.nodes)} nodes, {len(topology.links)} links, "
        f"{km:,.0f} km of fibre"
    )
    if summary:
        up = sum(1 for x in links if x.state is LinkState.UP)
        alarms = sum(1 for x in links if x.state is LinkState.ALARM)
        title += f"; live: {up} links up, {len(links) - up - alarms} down, {alarms} alarmed"
    else:
        title += " (plan: links coloured by length)"
    return MapModel(title, lon_scale, tuple(nodes), tuple(links), tuple(routes))


# -- drawing (matplotlib, imported here only) --------------------------------------------------

LABEL_OFFSETS = (
    (4.0, 3.0, "left"),
    (4.0, -10.0, "left"),
    (-4.0, 3.0, "right"),
    (-4.0, -10.0, "right"),
    (4.0, 11.0, "left"),
    (-4.0, -18.0, "right"),
)


def place_labels(
    model: MapModel,
    to_pixels: Any,
    font_pt: float,
    px_per_pt: float,
    bounds: tuple[float, float, float, float] | None = None,
) -> list[tuple[MapNode, tuple[float, float], str]]:
    """Each labelled node with an offset (points) and alignment where its label overlaps no
    label placed before it (SAE sites first, then cores) and stays inside `bounds` (pixels:
    x0, y0, x1, y1); a label with no free place is left out rather than drawn over another."""
    placed: list[tuple[float, float, float, float]] = []
    out = []
    order = sorted(
        (n for n in model.nodes if n.label),
        key=lambda n: (n.kind is not NodeKind.SAE, n.kind is not NodeKind.CORE),
    )
    for n in order:
        x, y = (float(v) for v in to_pixels((n.x, n.y)))
        w = 0.56 * font_pt * len(n.label or "") * px_per_pt
        h = 1.25 * font_pt * px_per_pt
        for dx, dy, ha in LABEL_OFFSETS:
            left = x + dx * px_per_pt - (w if ha == "right" else 0.0)
            bottom = y + dy * px_per_pt - 0.2 * h
            box = (left, bottom, left + w, bottom + h)
            inside = bounds is None or (
                bounds[0] <= box[0]
                and box[2] <= bounds[2]
                and bounds[1] <= box[1]
                and box[3] <= bounds[3]
            )
            if inside and not any(
                box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed
            ):
                placed.append(box)
                out.append((n, (dx, dy), ha))
                break
    return out


def draw(model: MapModel, out: Path, dpi: int = 110) -> None:
    """Write the map as a PNG to `out`."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib import colors
        from matplotlib.collections import LineCollection
        from matplotlib.lines import Line2D
        from matplotlib.ticker import FuncFormatter, MaxNLocator
    except ImportError as exc:  # pragma: no cover - measure extra missing
        raise RuntimeError("maps need matplotlib: pip install 'qphone[measure]'") from exc

    xy = {n.id: (n.x, n.y) for n in model.nodes}
    xs = [p[0] for p in xy.values()]
    ys = [p[1] for p in xy.values()]
    span = max(max(xs) - min(xs), max(ys) - min(ys), 1e-9)
    aspect = (max(ys) - min(ys) + 0.1 * span) / (max(xs) - min(xs) + 0.1 * span)
    height_in = min(13.0, max(6.0, 11.0 * aspect))
    width_in = min(11.0, max(4.5, height_in / aspect)) + 1.6  # + the colour bar
    fig, ax = plt.subplots(figsize=(width_in, height_in))
    live = any(link.state is not LinkState.PLANNED for link in model.links)
    handles: list[Any] = []

    def segs(links: list[MapLink]) -> list[list[tuple[float, float]]]:
        return [[xy[link.a], xy[link.b]] for link in links]

    # routes in use: a wide translucent band under their links
    for i, route in enumerate(model.routes):
        path = [xy[n] for n in route]
        ax.plot(
            [p[0] for p in path],
            [p[1] for p in path],
            color="#ff9f1c",
            lw=9,
            alpha=0.35,
            solid_capstyle="round",
            zorder=1,
            label="route the relays took" if i == 0 else None,
        )
    if model.routes:
        handles.append(
            Line2D([], [], color="#ff9f1c", lw=9, alpha=0.35, label="route the relays took")
        )

    cmap = plt.get_cmap("viridis")
    if not live:
        kms = [link.km for link in model.links]
        norm = colors.Normalize(vmin=0, vmax=max(kms) if kms else 1)
        lc = LineCollection(
            segs(list(model.links)), colors=[cmap(norm(k)) for k in kms], linewidths=1.6, zorder=2
        )
        ax.add_collection(lc)
        bar = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, shrink=0.6, pad=0.01)
        bar.set_label("link length (km)")
    else:
        up = [link for link in model.links if link.state is LinkState.UP]
        stocks = [link.stock_kbit or 0.0 for link in up]
        norm_s = colors.LogNorm(vmin=1.0, vmax=max(10.0, *stocks)) if up else None
        rates = [link.rate_bps or 0.0 for link in up]
        top = max([1000.0, *rates])

        def lw(rate: float | None) -> float:
            return 0.8 + 3.2 * math.log10(1 + (rate or 0.0) / 1000) / math.log10(1 + top / 1000)

        if up and norm_s is not None:
            lc = LineCollection(
                segs(up),
                colors=[cmap(norm_s(max(1.0, s))) for s in stocks],
                linewidths=[lw(link.rate_bps) for link in up],
                zorder=2,
            )
            ax.add_collection(lc)
            bar = fig.colorbar(
                plt.cm.ScalarMappable(norm=norm_s, cmap=cmap), ax=ax, shrink=0.6, pad=0.01
            )
            bar.set_label("key stock, smaller direction (kbit)")
            handles += [
                Line2D([], [], color="grey", lw=lw(0), label="link up, low rate"),
                Line2D(
                    [], [], color="grey", lw=lw(top), label=f"link up, {top / 1000:,.0f} kbit/s"
                ),
            ]
        down = [link for link in model.links if link.state is LinkState.DOWN]
        if down:
            ax.add_collection(
                LineCollection(
                    segs(down), colors="#888888", linewidths=1.2, linestyles="dashed", zorder=2
                )
            )
            handles.append(Line2D([], [], color="#888888", lw=1.2, ls="--", label="link down"))
        alarm = [link for link in model.links if link.state is LinkState.ALARM]
        if alarm:
            ax.add_collection(
                LineCollection(segs(alarm), colors="#d62828", linewidths=3.0, zorder=3)
            )
            mids = [((xy[x.a][0] + xy[x.b][0]) / 2, (xy[x.a][1] + xy[x.b][1]) / 2) for x in alarm]
            ax.scatter(
                [m[0] for m in mids],
                [m[1] for m in mids],
                marker="X",
                s=90,
                color="#d62828",
                edgecolors="white",
                zorder=6,
            )
            handles.append(
                Line2D([], [], color="#d62828", lw=3, marker="X", ms=9, label="eavesdropper alarm")
            )

    styles: tuple[tuple[NodeKind, str, float, str, str], ...] = (
        (NodeKind.SITE, "o", 9, "#1d3557", "site"),
        (NodeKind.CORE, "s", 28, "#1d3557", "core site / junction (3+ links)"),
        (NodeKind.SAE, "*", 150, "#e63946", "site with SAEs"),
    )
    for kind, marker, size, colour, what in styles:
        group = [n for n in model.nodes if n.kind is kind]
        if group:
            ax.scatter(
                [n.x for n in group],
                [n.y for n in group],
                marker=marker,
                s=size,
                color=colour,
                zorder=5,
                edgecolors="white",
                linewidths=0.4,
            )
            handles.append(
                Line2D(
                    [],
                    [],
                    ls="",
                    marker=marker,
                    color=colour,
                    ms=8 if kind is NodeKind.SAE else 5,
                    label=what,
                )
            )
    gone = [n for n in model.nodes if n.up is False]
    if gone:
        ax.scatter(
            [n.x for n in gone], [n.y for n in gone], marker="x", s=60, color="black", zorder=7
        )
        handles.append(
            Line2D([], [], ls="", marker="x", color="black", ms=7, label="node not answering")
        )
    ax.set_aspect("equal")
    ax.margins(0.05)
    ax.autoscale_view()
    ax.set_title("\n".join(textwrap.wrap(model.title, width=int(width_in * 9))), fontsize=10)
    if model.lon_scale:
        k = model.lon_scale
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / k:.1f}°E"))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.1f}°N"))
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.tick_params(labelsize=7)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    ax.legend(handles=handles, loc="best", fontsize=7, framealpha=0.85)
    fig.tight_layout()
    fig.canvas.draw()  # fixes the data-to-pixel transform used to keep labels apart
    small = len(model.nodes) > LABEL_ALL_UP_TO
    size = 6.5 if small else 8.0
    frame = ax.bbox.extents
    bounds = (float(frame[0]), float(frame[1]), float(frame[2]), float(frame[3]))
    for n, (dx, dy), ha in place_labels(model, ax.transData.transform, size, fig.dpi / 72, bounds):
        ax.annotate(
            n.label or "",
            (n.x, n.y),
            xytext=(dx, dy),
            textcoords="offset points",
            ha=ha,
            fontsize=size,
            zorder=8,
            color="#222222",
            fontweight="bold" if n.kind is NodeKind.SAE else "normal",
            bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.6),
        )
    fig.savefig(out, dpi=dpi)
    plt.close(fig)


def topology_of_network(info: dict[str, Any], coordinates: Topology | None) -> Topology:
    """The topology a running network's ``network.json`` describes, with lat/lon taken from
    `coordinates` (its topology file) for every node that has them there."""
    where = {n.id: n for n in coordinates.nodes} if coordinates else {}
    nodes = []
    for nid, v in info["nodes"].items():
        known = where.get(nid)
        spec = NodeSpec(nid, str(v.get("city", nid)))
        if known is not None and known.lat is not None and known.lon is not None:
            spec = replace(spec, lat=known.lat, lon=known.lon)
        nodes.append(spec)
    links = [
        LinkSpec(lid, v["a"], v["b"], float(v["distance_km"])) for lid, v in info["links"].items()
    ]
    saes = [SaeSpec(sid, v["node"]) for sid, v in info.get("saes", {}).items()]
    return Topology(
        str(info.get("topology") or "network"), "", tuple(nodes), tuple(links), tuple(saes)
    )
