"""Writes the two real-size topologies, ``hefei-metro-full.toml`` and ``china-backbone.toml``.

Deterministic (a fixed seed, no clock, no network): re-running it rewrites the same bytes, so
the committed TOMLs can be checked against it::

    .venv/bin/python -m keyserver.network.topologies.generate     # rewrites both files
    .venv/bin/python -m keyserver.network.topologies.generate --check   # exit 1 if they differ

The TOMLs are the product; this script says how they were made. Sources and what is
approximated are in each file's header and in docs/network.md ("Topologies").
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
import sys
import textwrap
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx

HERE = Path(__file__).resolve().parent
EARTH_KM = 6371.0


@dataclass(frozen=True)
class Node:
    id: str
    city: str
    lat: float
    lon: float


@dataclass(frozen=True)
class Link:
    a: str
    b: str
    km: float


@dataclass(frozen=True)
class Net:
    header: str
    name: str
    description: str
    nodes: tuple[Node, ...]
    links: tuple[Link, ...]
    saes: tuple[tuple[str, str], ...]  # (SAE ID, node)


def great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_KM * math.asin(math.sqrt(h))


def offset(lat: float, lon: float, bearing_deg: float, km: float) -> tuple[float, float]:
    """The point `km` from (lat, lon) along `bearing_deg` (flat-earth: fine below 100 km)."""
    b = math.radians(bearing_deg)
    dlat = km * math.cos(b) / 111.2
    dlon = km * math.sin(b) / (111.2 * math.cos(math.radians(lat)))
    return lat + dlat, lon + dlon


def graph(net: Net) -> nx.Graph:
    g = nx.Graph()
    g.add_nodes_from(n.id for n in net.nodes)
    for link in net.links:
        g.add_edge(link.a, link.b, km=link.km)
    return g


def farthest_pair(net: Net, among: Sequence[str]) -> tuple[str, str]:
    """The two nodes of `among` with the longest shortest fibre route between them."""
    g = graph(net)
    best: tuple[float, str, str] = (-1.0, "", "")
    for a in among:
        dist = nx.single_source_dijkstra_path_length(g, a, weight="km")
        for b in among:
            if b > a and (dist[b], a, b) > best:
                best = (dist[b], a, b)
    return best[1], best[2]


def split_km(total: float, n: int) -> list[float]:
    """`total` km in `n` hops of whole km, as even as possible."""
    whole = round(total)
    base, extra = divmod(whole, n)
    return [float(base + (1 if i < extra else 0)) for i in range(n)]


# -- hefei-metro-full ------------------------------------------------------------------------

# The 8 core sites: hefei-metro's nodes, coordinates and spans; a mesh of 12 links (its ring,
# its two chords and two more), so every core site has at least three core neighbours.
HEFEI_CORE_EXTRA = (("yaohai", "binhu", 17.0), ("xinzhan", "gaoxin", 24.0))
HEFEI_ACCESS_PER_CORE = (20, 20, 20, 20, 20, 20, 20, 19)  # 159 access sites
HEFEI_TOTAL_KM = 1147.0
ACCESS_ROUTE_FACTOR = 1.3  # fibre km per straight-line km for access sites
SUBURBAN_SHARE = 0.18  # access sites in the outer districts and counties (12-40 km)


def _read(name: str) -> dict[str, Any]:
    return tomllib.loads((HERE / f"{name}.toml").read_text(encoding="utf-8"))


def _nodes_links(doc: dict[str, Any]) -> tuple[list[Node], list[Link]]:
    nodes = [Node(t["id"], t["city"], float(t["lat"]), float(t["lon"])) for t in doc["nodes"]]
    links = [Link(t["a"], t["b"], float(t["distance_km"])) for t in doc["links"]]
    return nodes, links


def hefei_metro_full() -> Net:
    rng = random.Random(20221147)
    cores, core_links = _nodes_links(_read("hefei-metro"))
    by_id = {n.id: n for n in cores}
    core_links += [Link(a, b, km) for a, b, km in HEFEI_CORE_EXTRA]
    core_km = sum(link.km for link in core_links)
    centre = (sum(n.lat for n in cores) / len(cores), sum(n.lon for n in cores) / len(cores))
    # raw access lengths: most urban (1.5-12 km), a share suburban (12-40 km)
    plan: list[tuple[str, int, bool, float]] = []
    for core, count in zip(cores, HEFEI_ACCESS_PER_CORE, strict=True):
        for i in range(count):
            suburban = rng.random() < SUBURBAN_SHARE
            km = rng.uniform(12.0, 38.0) if suburban else min(12.0, rng.lognormvariate(1.35, 0.5))
            plan.append((core.id, i + 1, suburban, max(1.5, km)))
    target = HEFEI_TOTAL_KM - core_km
    scale = target / sum(p[3] for p in plan)
    lengths = [min(40.0, max(1.0, round(p[3] * scale, 1))) for p in plan]
    residual = round(target - sum(lengths), 1)
    longest = max(range(len(lengths)), key=lambda i: (lengths[i] < 40.0 - residual, lengths[i]))
    lengths[longest] = round(lengths[longest] + residual, 1)
    nodes = list(cores)
    links = list(core_links)
    for (core_id, i, suburban, _), km in zip(plan, lengths, strict=True):
        core = by_id[core_id]
        outward = math.degrees(math.atan2(core.lon - centre[1], core.lat - centre[0]))
        bearing = outward + rng.uniform(-50, 50) if suburban else rng.uniform(0, 360)
        lat, lon = offset(core.lat, core.lon, bearing, km / ACCESS_ROUTE_FACTOR)
        nid = f"{core_id}-{i:02d}"
        nodes.append(Node(nid, f"{core.city} access {i}", round(lat, 4), round(lon, 4)))
        links.append(Link(core_id, nid, km))
    net = Net("", "hefei-metro-full", "", tuple(nodes), tuple(links), ())
    access = [n.id for n in nodes[len(cores) :]]
    alice, bob = farthest_pair(net, access)
    others = [
        n
        for n in (f"{c}-01" for c in ("yaohai", "baohe", "gaoxin", "xinzhan", "binhu", "luyang"))
        if n not in (alice, bob)
    ][:4]
    saes = (
        ("alice", alice),
        ("bob", bob),
        *zip(("carol", "dave", "erin", "frank"), others, strict=True),
    )
    total = sum(link.km for link in links)
    header = f"""\
Hefei's metropolitan QKD network at its published size: 8 core sites and 159 access sites,
{total:,.0f} km of fibre, as launched in August 2022 (Xinhua, 26 August 2022: eight core
sites, 159 access sites, 1,147 km of optical fibre). Written by generate.py (do not edit by hand:
change the generator and re-run it).

Core: hefei-metro's 8 sites, spans and coordinates, meshed by 12 links ({core_km:g} km).

Access: every access site on one link to its core site; {len(access)} links, 1-40 km
(most 2-10 km in the city, about a fifth 12-40 km in the outer districts and counties).

Approximated: the real sites' places and fibre routes are not published; access sites are
placed at random (fixed seed) around their core site, lat/lon consistent with the fibre
length (x{ACCESS_ROUTE_FACTOR} route factor), lengths scaled so the total is 1,147 km.

SAEs: alice and bob at the two access sites farthest apart by fibre route; four more."""
    return Net(
        header,
        "hefei-metro-full",
        "Hefei metro network at real size: 8 core sites, 159 access sites, 1,147 km",
        tuple(nodes),
        tuple(links),
        saes,
    )


# -- china-backbone --------------------------------------------------------------------------

BACKBONE_ROUTE_FACTOR = 1.25  # fibre km per great-circle km between backbone cities
BACKBONE_HOP_KM = 68.0  # aim of a hop's length; a hop never exceeds BACKBONE_MAX_KM
BACKBONE_MAX_KM = 95.0

# Cities (approximate centres, WGS 84). Beijing-Hefei comes from beijing-hefei.toml.
CITIES: dict[str, tuple[str, float, float]] = {
    "chaohu": ("Chaohu", 31.624, 117.889),
    "maanshan": ("Ma'anshan", 31.670, 118.507),
    "nanjing": ("Nanjing", 32.060, 118.797),
    "zhenjiang": ("Zhenjiang", 32.188, 119.425),
    "changzhou": ("Changzhou", 31.811, 119.974),
    "wuxi": ("Wuxi", 31.491, 120.312),
    "suzhou-js": ("Suzhou (Jiangsu)", 31.299, 120.585),
    "kunshan": ("Kunshan", 31.385, 120.981),
    "shanghai": ("Shanghai", 31.230, 121.474),
    "jiaxing": ("Jiaxing", 30.746, 120.756),
    "hangzhou": ("Hangzhou", 30.274, 120.155),
    "wuhu": ("Wuhu", 31.353, 118.433),
    "xuancheng": ("Xuancheng", 30.940, 118.759),
    "guangde": ("Guangde", 30.893, 119.417),
    "huzhou": ("Huzhou", 30.894, 120.088),
    "shaoxing": ("Shaoxing", 30.000, 120.580),
    "ningbo": ("Ningbo", 29.868, 121.544),
    "luan": ("Lu'an", 31.735, 116.523),
    "jinzhai": ("Jinzhai", 31.727, 115.934),
    "macheng": ("Macheng", 31.173, 115.008),
    "wuhan": ("Wuhan", 30.593, 114.305),
    "xianning": ("Xianning", 29.841, 114.322),
    "yueyang": ("Yueyang", 29.357, 113.129),
    "changsha": ("Changsha", 28.228, 112.939),
    "zhuzhou": ("Zhuzhou", 27.828, 113.133),
    "hengyang": ("Hengyang", 26.894, 112.572),
    "chenzhou": ("Chenzhou", 25.770, 113.015),
    "shaoguan": ("Shaoguan", 24.811, 113.597),
    "qingyuan": ("Qingyuan", 23.682, 113.056),
    "guangzhou": ("Guangzhou", 23.129, 113.264),
    "dongguan": ("Dongguan", 23.021, 113.752),
    "shenzhen": ("Shenzhen", 22.543, 114.058),
    "zibo": ("Zibo", 36.813, 118.055),
    "weifang": ("Weifang", 36.707, 119.162),
    "gaomi": ("Gaomi", 36.383, 119.755),
    "qingdao": ("Qingdao", 36.067, 120.383),
    "zhuozhou": ("Zhuozhou", 39.485, 115.974),
    "baoding": ("Baoding", 38.874, 115.465),
    "dingzhou": ("Dingzhou", 38.516, 114.990),
    "shijiazhuang": ("Shijiazhuang", 38.042, 114.514),
    "xingtai": ("Xingtai", 37.071, 114.504),
    "handan": ("Handan", 36.625, 114.539),
    "anyang": ("Anyang", 36.098, 114.393),
    "xinxiang": ("Xinxiang", 35.303, 113.927),
    "zhengzhou": ("Zhengzhou", 34.747, 113.625),
    "xuchang": ("Xuchang", 34.036, 113.852),
    "luohe": ("Luohe", 33.582, 114.017),
    "zhumadian": ("Zhumadian", 33.011, 114.022),
    "xinyang": ("Xinyang", 32.147, 114.091),
    "xiaogan": ("Xiaogan", 30.925, 113.917),
    "kaifeng": ("Kaifeng", 34.797, 114.307),
    "shangqiu": ("Shangqiu", 34.414, 115.656),
    "pingxiang": ("Pingxiang", 27.622, 113.854),
    "yichun": ("Yichun", 27.815, 114.416),
    "nanchang": ("Nanchang", 28.683, 115.858),
    "yingtan": ("Yingtan", 28.260, 117.069),
    "shangrao": ("Shangrao", 28.454, 117.943),
    "quzhou": ("Quzhou", 28.970, 118.859),
    "jinhua": ("Jinhua", 29.079, 119.647),
    "zhuji": ("Zhuji", 29.714, 120.244),
    "chuzhou": ("Chuzhou", 32.302, 118.317),
    "jingzhou": ("Jingzhou", 30.335, 112.240),
    "yichang": ("Yichang", 30.692, 111.286),
    "enshi": ("Enshi", 30.272, 109.488),
    "wanzhou": ("Wanzhou", 30.808, 108.409),
    "chongqing": ("Chongqing", 29.563, 106.551),
    "neijiang": ("Neijiang", 29.580, 105.058),
    "chengdu": ("Chengdu", 30.573, 104.066),
    "luoyang": ("Luoyang", 34.620, 112.454),
    "sanmenxia": ("Sanmenxia", 34.773, 111.200),
    "weinan": ("Weinan", 34.500, 109.510),
    "xian": ("Xi'an", 34.341, 108.940),
    "nanping": ("Nanping", 26.642, 118.178),
    "fuzhou-fj": ("Fuzhou (Fujian)", 26.074, 119.296),
}

# Lines (city to city; a long span gets trusted relay stations in between). The published
# structure: the Beijing-Shanghai trunk (Beijing-Jinan-Hefei-Shanghai; here Beijing-Hefei as
# in beijing-hefei.toml, then Hefei-Nanjing-Shanghai), Hefei-Wuhan, Wuhan-Guangzhou; the other
# lines are ours, along main rail corridors, to reach the published size (not CN-QCN's lines).
LINES: tuple[tuple[str, ...], ...] = (
    (
        "hefei",
        "chaohu",
        "maanshan",
        "nanjing",
        "zhenjiang",
        "changzhou",
        "wuxi",
        "suzhou-js",
        "kunshan",
        "shanghai",
    ),
    ("shanghai", "jiaxing", "hangzhou"),
    ("chaohu", "wuhu", "xuancheng", "guangde", "huzhou", "hangzhou"),
    ("hangzhou", "shaoxing", "ningbo"),
    ("nanjing", "chuzhou", "bengbu"),
    ("hefei", "luan", "jinzhai", "macheng", "wuhan"),
    (
        "wuhan",
        "xianning",
        "yueyang",
        "changsha",
        "zhuzhou",
        "hengyang",
        "chenzhou",
        "shaoguan",
        "qingyuan",
        "guangzhou",
    ),
    ("guangzhou", "dongguan", "shenzhen"),
    ("jinan", "zibo", "weifang", "gaomi", "qingdao"),
    (
        "beijing",
        "zhuozhou",
        "baoding",
        "dingzhou",
        "shijiazhuang",
        "xingtai",
        "handan",
        "anyang",
        "xinxiang",
        "zhengzhou",
        "xuchang",
        "luohe",
        "zhumadian",
        "xinyang",
        "xiaogan",
        "wuhan",
    ),
    ("zhengzhou", "kaifeng", "shangqiu", "xuzhou"),
    (
        "changsha",
        "pingxiang",
        "yichun",
        "nanchang",
        "yingtan",
        "shangrao",
        "quzhou",
        "jinhua",
        "zhuji",
        "hangzhou",
    ),
    ("wuhan", "jingzhou", "yichang", "enshi", "wanzhou", "chongqing", "neijiang", "chengdu"),
    ("zhengzhou", "luoyang", "sanmenxia", "weinan", "xian"),
    ("yingtan", "nanping", "fuzhou-fj"),
)

# Small metro networks at these cities: two access sites each, on a triangle with the city.
METROS = (
    "beijing",
    "jinan",
    "hefei",
    "nanjing",
    "shanghai",
    "hangzhou",
    "wuhan",
    "changsha",
    "guangzhou",
    "zhengzhou",
)
METRO_SPANS = ((9.0, 14.0), (12.0, 21.0))  # km: city-m1 / m1-m2 / m2-city drawn from these


def china_backbone() -> Net:
    rng = random.Random(2025108908)
    bh_nodes, bh_links = _nodes_links(_read("beijing-hefei"))
    nodes: dict[str, Node] = {n.id: n for n in bh_nodes}
    for cid, (city, lat, lon) in CITIES.items():
        nodes[cid] = Node(cid, city, lat, lon)
    named = list(nodes)
    links: list[Link] = list(bh_links)
    for line in LINES:
        for a, b in itertools.pairwise(line):
            na, nb = nodes[a], nodes[b]
            fibre = BACKBONE_ROUTE_FACTOR * great_circle_km(na.lat, na.lon, nb.lat, nb.lon)
            hops = max(1, round(fibre / BACKBONE_HOP_KM))
            while fibre / hops > BACKBONE_MAX_KM:
                hops += 1
            chain = [a]
            for k in range(1, hops):
                t = k / hops
                rid = f"{a}-{b}-{k}"
                nodes[rid] = Node(
                    rid,
                    f"relay {k} of {hops - 1}, {na.city} - {nb.city}",
                    round(na.lat + t * (nb.lat - na.lat), 4),
                    round(na.lon + t * (nb.lon - na.lon), 4),
                )
                chain.append(rid)
            chain.append(b)
            for (x, y), km in zip(itertools.pairwise(chain), split_km(fibre, hops), strict=True):
                links.append(Link(x, y, km))
    backbone_nodes = len(nodes)
    backbone_km = sum(link.km for link in links)
    backbone_links = len(links)
    for city in METROS:
        c = nodes[city]
        bearing = rng.uniform(0, 360)
        spans = [
            round(rng.uniform(*METRO_SPANS[0]), 1),
            round(rng.uniform(*METRO_SPANS[1]), 1),
            round(rng.uniform(*METRO_SPANS[0]), 1),
        ]
        m1 = Node(
            f"{city}-m1",
            f"{c.city} metro 1",
            *(round(v, 4) for v in offset(c.lat, c.lon, bearing, spans[0] / 1.3)),
        )
        m2 = Node(
            f"{city}-m2",
            f"{c.city} metro 2",
            *(round(v, 4) for v in offset(c.lat, c.lon, bearing + 60, spans[2] / 1.3)),
        )
        nodes[m1.id], nodes[m2.id] = m1, m2
        links += [
            Link(city, m1.id, spans[0]),
            Link(m1.id, m2.id, spans[1]),
            Link(m2.id, city, spans[2]),
        ]
    net = Net("", "china-backbone", "", tuple(nodes.values()), tuple(links), ())
    alice_node, bob_node = farthest_pair(net, named)
    saes = (
        ("alice", alice_node),
        ("bob", bob_node),
        ("carol", "hefei-m1"),
        ("dave", "shanghai-m1"),
        ("erin", "wuhan"),
        ("frank", "guangzhou-m2"),
    )
    total = sum(link.km for link in links)
    kms = [link.km for link in links]
    header = f"""\
China's QKD backbone at its published scale, for emulated links: {backbone_nodes} trusted
backbone nodes, {backbone_links} backbone links, {backbone_km:,.0f} km of backbone fibre,
and {len(METROS)} small metro networks ({len(nodes) - backbone_nodes} access sites) at its
cities; {len(nodes)} nodes, {len(links)} links, {total:,.0f} km in all; links
{min(kms):g}-{max(kms):g} km, mean {total / len(links):.0f} km.
Written by generate.py (change the generator and
re-run it).

Modelled on CN-QCN as published: Chen et al., npj Quantum Information (2025), doi
10.1038/s41534-025-01089-8 (more than 10,000 km, 145 backbone nodes, 20 metro networks,
80 cities) and Chen et al., Nature 589, 214 (2021) (Beijing-Shanghai trunk of about
2,000 km with 32 trusted nodes); Hefei-Wuhan is the Beijing-Shanghai trunk's first
extension (the "Wu-He" line, agreed in 2019).

Approximated: the real nodes' places and fibre routes are
not published; beyond the trunks named above (Beijing-Shanghai, Hefei-Wuhan, Wuhan-Guangzhou),
the lines are ours, along main rail corridors, to reach the published size and 17 provinces'
worth of cities. Beijing-Hefei is beijing-hefei.toml (main route, both detours, distances);
other spans are the great-circle distance x{BACKBONE_ROUTE_FACTOR} (fibre route factor), cut
into hops of about {BACKBONE_HOP_KM:g} km (at most {BACKBONE_MAX_KM:g}) by relay stations placed
evenly on the straight line (named after their span, not real sites); city coordinates are
approximate centres.

SAEs: alice and bob at the two cities farthest apart by fibre route; four more."""
    return Net(
        header,
        "china-backbone",
        f"China's QKD backbone (CN-QCN-like): {backbone_nodes} trusted nodes, "
        f"{total:,.0f} km, {len(METROS)} metro networks",
        tuple(nodes.values()),
        tuple(links),
        saes,
    )


# -- output ----------------------------------------------------------------------------------


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(net: Net) -> str:
    header = [
        line
        for para in net.header.split("\n\n")
        for line in textwrap.wrap(" ".join(para.split()), width=96)
    ]
    out = [
        *(f"# {line}" for line in header),
        f"name = {_q(net.name)}",
        f"description = {_q(net.description)}",
        'fidelity = "emulated"',
        "",
        "# QKD blocks of at most 20 s of link time: a link's first key 20 s after it starts",
        "# instead of up to 300 s, at about three quarters of the long-block key rate at 70 km",
        "# (docs/network.md, cadence)",
        "[defaults.params]",
        "max_block_seconds = 20",
        "",
    ]
    for n in net.nodes:
        out += [
            "[[nodes]]",
            f"id = {_q(n.id)}",
            f"city = {_q(n.city)}",
            f"lat = {n.lat}",
            f"lon = {n.lon}",
        ]
    out.append("")
    for link in net.links:
        out += ["[[links]]", f"a = {_q(link.a)}", f"b = {_q(link.b)}", f"distance_km = {link.km:g}"]
    out.append("")
    for sae, node in net.saes:
        out += ["[[saes]]", f"id = {_q(sae)}", f"node = {_q(node)}"]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--check", action="store_true", help="exit 1 if a shipped file differs")
    args = p.parse_args(argv)
    stale = []
    for net in (hefei_metro_full(), china_backbone()):
        path = HERE / f"{net.name}.toml"
        text = render(net)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(path.name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print(
            f"out of date: {', '.join(stale)}; run python -m keyserver.network.topologies.generate",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
