"""The shipped topologies: they load, have the published sizes, and the planner lays them out.

Pure Python: no processes, no network (the planner only binds free ports on loopback).
"""

from __future__ import annotations

import itertools
import statistics
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import networkx as nx
import pytest

from keyserver.configfile import ConfigError
from keyserver.network.plan import Options, make_plan
from keyserver.network.topologies import generate
from keyserver.topology import (
    Topology,
    load_topology,
    parse_topology,
    shipped_topologies,
)

HEFEI_CORES = {"shushan", "luyang", "yaohai", "xinzhan", "baohe", "binhu", "jingkai", "gaoxin"}
# the rate reaches zero at about 142 km with the project's physics: every link well under it
MAX_LINK_KM = 100.0


def raw(name: str) -> dict[str, Any]:
    res = resources.files("keyserver.network") / "topologies" / f"{name}.toml"
    return tomllib.loads(res.read_text(encoding="utf-8"))


def graph(t: Topology) -> nx.Graph:
    g = nx.Graph()
    g.add_nodes_from(t.node_ids())
    for link in t.links:
        g.add_edge(link.a, link.b, km=link.distance_km)
    return g


def route_km(t: Topology, a: str, b: str) -> float:
    return float(nx.shortest_path_length(graph(t), a, b, weight="km"))


@pytest.mark.parametrize("name", shipped_topologies())
def test_every_shipped_topology_loads_connected_with_reachable_links(name: str) -> None:
    t = load_topology(name)
    assert nx.is_connected(graph(t)), name
    assert all(0 < link.distance_km <= MAX_LINK_KM for link in t.links), name
    assert all(t.sae_node(s.id) in t.node_ids() for s in t.saes)


@pytest.mark.parametrize(
    "name", ["beijing-hefei", "hefei-metro", "hefei-metro-full", "china-backbone"]
)
def test_coordinates_agree_with_fibre_lengths(name: str) -> None:
    """Every node has lat/lon, and no fibre is much shorter than the straight line it spans."""
    t = load_topology(name)
    by = {n.id: n for n in t.nodes}
    assert all(n.lat is not None and n.lon is not None for n in t.nodes)
    for link in t.links:
        a, b = by[link.a], by[link.b]
        assert a.lat is not None and a.lon is not None and b.lat is not None and b.lon is not None
        straight = generate.great_circle_km(a.lat, a.lon, b.lat, b.lon)
        assert 0.8 * straight <= link.distance_km <= 3.5 * straight + 5, link.id


def test_generated_topologies_are_reproduced_by_their_generator() -> None:
    for net in (generate.hefei_metro_full(), generate.china_backbone()):
        res = resources.files("keyserver.network") / "topologies" / f"{net.name}.toml"
        assert res.read_text(encoding="utf-8") == generate.render(net), (
            f"{net.name}.toml is stale: run python -m keyserver.network.topologies.generate"
        )


def test_hefei_metro_full_has_the_published_size() -> None:
    t = load_topology("hefei-metro-full")
    assert raw("hefei-metro-full")["fidelity"] == "emulated"
    assert {link.fidelity for link in t.links} == {"emulated"}
    ids = set(t.node_ids())
    assert ids >= HEFEI_CORES and len(ids) == 8 + 159
    core = graph(t).subgraph(HEFEI_CORES)
    assert nx.is_connected(core) and min(d for _, d in core.degree()) >= 3  # a mesh
    access = ids - HEFEI_CORES
    for site in access:
        links = t.links_of(site)
        assert len(links) == 1 and links[0].other(site) in HEFEI_CORES, site
        assert 1.0 <= links[0].distance_km <= 40.0, site
    assert abs(t.total_km() - 1147) < 1
    assert len(t.saes) >= 4 and all(s.node in access for s in t.saes)
    assert len({s.node for s in t.saes}) == len(t.saes)
    # alice and bob: the two access sites farthest apart by fibre route
    dist = dict(nx.all_pairs_dijkstra_path_length(graph(t), weight="km"))
    farthest = max(dist[a][b] for a in access for b in access)
    alice, bob = t.sae_node("alice"), t.sae_node("bob")
    assert alice is not None and bob is not None
    assert dist[alice][bob] == pytest.approx(farthest)


def test_china_backbone_has_the_published_scale() -> None:
    t = load_topology("china-backbone")
    assert raw("china-backbone")["fidelity"] == "emulated"
    assert {link.fidelity for link in t.links} == {"emulated"}
    metro = {n for n in t.node_ids() if n.endswith(("-m1", "-m2"))}
    backbone = set(t.node_ids()) - metro
    assert len(backbone) >= 145
    trunk = [link for link in t.links if link.a in backbone and link.b in backbone]
    trunk_km = sum(link.distance_km for link in trunk)
    assert trunk_km >= 10_000
    assert 60 <= statistics.mean(link.distance_km for link in trunk) <= 80
    assert max(link.distance_km for link in t.links) <= 95
    assert len(metro) >= 16  # metro networks hang off its cities
    for m in metro:
        assert any(link.other(m) in backbone for link in t.links_of(m)) or all(
            link.other(m) in metro for link in t.links_of(m)
        )
    g = graph(t)
    assert nx.is_connected(g)
    # beijing-hefei is inside it, link for link
    bh = load_topology("beijing-hefei")
    for link in bh.links:
        assert g.has_edge(link.a, link.b) and g[link.a][link.b]["km"] == link.distance_km
    # Beijing-Hefei has a second, node-disjoint route there (via Zhengzhou and Wuhan)
    assert len(list(nx.node_disjoint_paths(g, "beijing", "hefei"))) == 2
    # alice and bob at the two named cities farthest apart; the route is long and exists
    alice, bob = t.sae_node("alice"), t.sae_node("bob")
    assert alice is not None and bob is not None
    path = nx.shortest_path(g, alice, bob, weight="km")
    assert route_km(t, alice, bob) > 2_000 and len(path) - 1 > 30
    cities = [n for n in backbone if n in generate.CITIES or n in bh.node_ids()]
    dist = dict(nx.all_pairs_dijkstra_path_length(g, weight="km"))
    assert dist[alice][bob] == pytest.approx(max(dist[a][b] for a in cities for b in cities))


def test_beijing_hefei_keeps_16_hops_and_has_node_disjoint_detours() -> None:
    t = load_topology("beijing-hefei")
    g = graph(t)
    assert nx.shortest_path_length(g, "beijing", "hefei") == 16
    # two node-disjoint routes around Qufu and around Huainan, for multipath
    assert len(list(nx.node_disjoint_paths(g, "taian", "tengzhou"))) == 2
    assert len(list(nx.node_disjoint_paths(g, "bengbu", "hefei"))) == 2
    cut = g.copy()
    cut.remove_nodes_from(["qufu", "huainan"])
    assert nx.has_path(cut, "beijing", "hefei")


@pytest.mark.parametrize(
    ("node", "why"),
    [
        ({"id": "a", "lat": 31.0}, "both lat and lon"),
        ({"id": "a", "lon": 117.0}, "both lat and lon"),
        ({"id": "a", "lat": 91.0, "lon": 117.0}, "-90..90"),
        ({"id": "a", "lat": 31.0, "lon": -181}, "-180..180"),
        ({"id": "a", "lat": True, "lon": 117.0}, "lat = True"),
        ({"id": "a", "lat": "31", "lon": 117.0}, "lat = '31'"),
    ],
)
def test_bad_coordinates_are_refused_with_the_fix(node: dict[str, Any], why: str) -> None:
    doc = {"nodes": [node, {"id": "b"}], "links": [{"a": "a", "b": "b", "distance_km": 1}]}
    with pytest.raises(ConfigError, match="give both lat and lon") as e:
        parse_topology(doc)
    assert why in str(e.value)


def test_coordinates_are_optional_and_kept() -> None:
    doc = {
        "nodes": [{"id": "a", "lat": -33.9, "lon": 151.2}, {"id": "b"}],
        "links": [{"a": "a", "b": "b", "distance_km": 1}],
    }
    t = parse_topology(doc)
    assert (t.nodes[0].lat, t.nodes[0].lon) == (-33.9, 151.2)
    assert (t.nodes[1].lat, t.nodes[1].lon) == (None, None)


@pytest.mark.parametrize("name", ["hefei-metro-full", "china-backbone"])
def test_planner_lays_out_a_real_size_network(name: str, tmp_path: Path) -> None:
    t = load_topology(name)
    plan = make_plan(tmp_path / name, t, Options())
    assert set(plan.nodes) == set(t.node_ids())
    assert len(plan.modules) == 2 * len(t.links)
    ports = [p for n in plan.nodes.values() for p in (n.sae_port, n.node_port)]
    ports += [m.port for m in plan.modules.values()]
    ports += [p for qc in plan.channels.values() for p in qc]
    assert len(ports) == len(set(ports)) == 2 * len(t.nodes) + 4 * len(t.links)
    assert all(1024 <= p <= 65535 for p in ports)


def test_a_big_network_polls_keyless_modules_less_often(tmp_path: Path) -> None:
    """More than BIG_NETWORK_SITES sites: a node asks a module without key for it every
    BIG_NETWORK_HUNGRY_POLL_S s (hefei-metro-full's 342 modules polled each second cost a
    core), tolerates BIG_NETWORK_DEAD_MISSES failed requests in a row and a longer silence of
    its neighbour before a link goes down, and caps its stock lower; a small network keeps the
    defaults. Every module config names the network's plan cache."""
    from keyserver.kms.nodeconfig import load_node_config
    from keyserver.network import plan as planmod
    from keyserver.network.plan import BIG_NETWORK_HUNGRY_POLL_S, BIG_NETWORK_SITES, write_configs
    from keyserver.qkd.config import load_config
    from keyserver.topology import parse_topology

    def configs(nodes: int) -> tuple[Any, Any, Path]:
        ids = [f"n{i}" for i in range(nodes)]
        t = parse_topology(
            {
                "name": f"net{nodes}",
                "fidelity": "emulated",
                "nodes": [{"id": n} for n in ids],
                "links": [{"a": a, "b": b, "distance_km": 5.0} for a, b in itertools.pairwise(ids)],
            }
        )
        plan = make_plan(tmp_path / t.name, t, Options())
        write_configs(plan)
        module = load_config(next(iter(plan.modules.values())).config)
        return load_node_config(plan.nodes["n0"].config), module, plan.directory

    small, small_module, small_dir = configs(3)
    big, big_module, _ = configs(BIG_NETWORK_SITES + 1)
    assert (small.timers.dead_misses, small.timers.neighbour_timeout) == (1, 30.0)
    assert big.timers.dead_misses == planmod.BIG_NETWORK_DEAD_MISSES > 1
    assert big.timers.neighbour_timeout == planmod.BIG_NETWORK_NEIGHBOUR_TIMEOUT_S
    assert (small.timers.request_timeout, big.timers.request_timeout) == (
        3.0,
        planmod.BIG_NETWORK_REQUEST_TIMEOUT_S,
    )
    assert (small.timers.lsa_refresh, small.lsa_max_age) == (30.0, 100.0)
    assert (big.timers.lsa_refresh, big.lsa_max_age) == (
        planmod.BIG_NETWORK_LSA_REFRESH_S,
        planmod.BIG_NETWORK_LSA_MAX_AGE_S,
    )
    assert small.max_key_count == Options().max_key_count
    assert big.max_key_count == planmod.BIG_NETWORK_MAX_KEYS < Options().max_key_count
    assert small_module.northbound.max_key_count == Options().module_max_keys
    assert big_module.northbound.max_key_count == planmod.BIG_NETWORK_MODULE_MAX_KEYS
    assert small_module.northbound.key_size == planmod.MODULE_KEY_BITS
    assert big_module.northbound.key_size == planmod.BIG_NETWORK_MODULE_KEY_BITS
    assert small_module.plan_cache == small_dir / "plans"
    assert small_module.synchronous == "OFF"  # emulated: no fsync per block

    def hungry_poll(nodes: int) -> float:
        ids = [f"n{i}" for i in range(nodes)]
        t = parse_topology(
            {
                "name": f"line{nodes}",
                "fidelity": "emulated",
                "nodes": [{"id": n} for n in ids],
                "links": [{"a": a, "b": b, "distance_km": 5.0} for a, b in itertools.pairwise(ids)],
            }
        )
        plan = make_plan(tmp_path / t.name, t, Options())
        write_configs(plan)
        return load_node_config(plan.nodes["n0"].config).timers.hungry_poll

    assert hungry_poll(3) == 1.0
    assert hungry_poll(BIG_NETWORK_SITES + 1) == BIG_NETWORK_HUNGRY_POLL_S


def test_a_directory_named_like_a_shipped_topology_does_not_hide_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pair").mkdir()  # e.g. a scratch directory in the working directory
    (tmp_path / "mine").write_text((tmp_path / "nothing").as_posix())
    monkeypatch.chdir(tmp_path)
    assert [n.id for n in load_topology("pair").nodes] == ["KME-A", "KME-B"]
    with pytest.raises(ConfigError):
        load_topology("mine")  # a file that is no shipped name is read as a path
