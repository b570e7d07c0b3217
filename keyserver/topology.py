"""Network topologies: nodes (sites), QKD links between them, SAEs and the node each belongs to.

A topology is a TOML file (documented in docs/network.md, examples shipped as package data in
``keyserver/network/topologies/``)::

    name = "diamond"
    description = "four nodes, two routes"
    fidelity = "physics"        # optional network default: "physics" (default) or "emulated"

    [defaults]                  # optional: applied to every link that does not say otherwise
    distance_km = 10.0

    [[nodes]]
    id = "a"                    # node ID: letters, digits, '-', '_' (also a certificate CN)
    city = "Alpha"              # optional display name
    lat = 31.82                 # optional, with lon: WGS 84 degrees (for maps)
    lon = 117.23

    [[links]]
    a = "a"                     # the node of the transmitter module
    b = "b"                     # the node of the receiver module
    distance_km = 12.0          # fibre length
    id = "a-b"                  # optional; default "<a>-<b>"
    fidelity = "emulated"       # optional; default: the network's fidelity
    [links.params]              # optional: QKD module physics parameters (passed through)

    [[saes]]
    id = "alice"
    node = "a"

Loading is strict: unknown keys are refused, IDs must be unique, links must join two distinct
known nodes and at most one link may join the same two nodes.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from keyserver.configfile import ConfigError, load_toml, parse_toml
from keyserver.etsi014.messages import valid_sae_id

_ID = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,62}")


@dataclass(frozen=True)
class NodeSpec:
    id: str
    city: str
    lat: float | None = None  # WGS 84 degrees, both or neither (maps only)
    lon: float | None = None


@dataclass(frozen=True)
class LinkSpec:
    id: str
    a: str  # node of the transmitter module
    b: str  # node of the receiver module
    distance_km: float
    params: dict[str, Any] = field(default_factory=dict)
    fidelity: str = "physics"  # "physics" | "emulated" (keyserver.qkd.config.Fidelity)

    def other(self, node: str) -> str:
        return self.b if node == self.a else self.a


@dataclass(frozen=True)
class SaeSpec:
    id: str
    node: str


@dataclass(frozen=True)
class Topology:
    name: str
    description: str
    nodes: tuple[NodeSpec, ...]
    links: tuple[LinkSpec, ...]
    saes: tuple[SaeSpec, ...]

    def node_ids(self) -> list[str]:
        return [n.id for n in self.nodes]

    def link(self, link_id: str) -> LinkSpec:
        for link in self.links:
            if link.id == link_id:
                return link
        raise KeyError(link_id)

    def links_of(self, node: str) -> list[LinkSpec]:
        return [link for link in self.links if node in (link.a, link.b)]

    def neighbours(self, node: str) -> list[str]:
        return [link.other(node) for link in self.links_of(node)]

    def sae_node(self, sae: str) -> str | None:
        for s in self.saes:
            if s.id == sae:
                return s.node
        return None

    def total_km(self) -> float:
        return sum(link.distance_km for link in self.links)


_TOP_KEYS = {"name", "description", "fidelity", "defaults", "nodes", "links", "saes"}
_NODE_KEYS = {"id", "city", "lat", "lon"}
_LINK_KEYS = {"id", "a", "b", "distance_km", "params", "fidelity"}
FIDELITIES = ("physics", "emulated")
_SAE_KEYS = {"id", "node"}
_DEFAULT_KEYS = {"distance_km", "params"}


def _table_list(doc: dict[str, Any], name: str) -> list[dict[str, Any]]:
    value = doc.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"[[{name}]] must be an array of tables")
    return value


def _check_keys(where: str, table: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where} has unknown key {unknown[0]!r}; allowed: {sorted(allowed)}")


def _ident(where: str, value: Any) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise ConfigError(
            f"{where} = {value!r} is not a valid ID (a letter, then letters, digits, '-', '_'; "
            "at most 63 characters)"
        )
    return value


def _km(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 500:
        raise ConfigError(f"{where} must be a number of km within 0..500")
    return float(value)


def _degrees(nid: str, name: str, value: Any, limit: int) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not -limit <= value <= limit
    ):
        raise ConfigError(
            f"[[nodes]] {nid}: {name} = {value!r}: give both lat and lon, in degrees "
            "(lat within -90..90, lon within -180..180)"
        )
    return float(value)


def _coordinates(nid: str, t: dict[str, Any]) -> tuple[float | None, float | None]:
    if "lat" not in t and "lon" not in t:
        return None, None
    return _degrees(nid, "lat", t.get("lat"), 90), _degrees(nid, "lon", t.get("lon"), 180)


def parse_topology(doc: dict[str, Any], default_name: str = "topology") -> Topology:
    _check_keys("the topology", doc, _TOP_KEYS)
    name = doc.get("name", default_name)
    description = doc.get("description", "")
    if not isinstance(name, str) or not isinstance(description, str):
        raise ConfigError("name and description must be strings")
    network_fidelity = doc.get("fidelity", "physics")
    if network_fidelity not in FIDELITIES:
        raise ConfigError('fidelity must be "physics" or "emulated"')
    defaults = doc.get("defaults", {})
    if not isinstance(defaults, dict):
        raise ConfigError("[defaults] must be a table")
    _check_keys("[defaults]", defaults, _DEFAULT_KEYS)
    nodes: list[NodeSpec] = []
    for i, t in enumerate(_table_list(doc, "nodes")):
        _check_keys(f"[[nodes]] #{i + 1}", t, _NODE_KEYS)
        nid = _ident(f"[[nodes]] #{i + 1} id", t.get("id"))
        city = t.get("city", nid)
        if not isinstance(city, str):
            raise ConfigError(f"[[nodes]] {nid}: city must be a string")
        nodes.append(NodeSpec(nid, city, *_coordinates(nid, t)))
    ids = [n.id for n in nodes]
    if len(nodes) < 2:
        raise ConfigError("a topology needs at least two [[nodes]]")
    if len(set(ids)) != len(ids):
        dup = next(x for x in ids if ids.count(x) > 1)
        raise ConfigError(f"node ID {dup!r} appears twice in [[nodes]]")
    links: list[LinkSpec] = []
    pairs: set[frozenset[str]] = set()
    for i, t in enumerate(_table_list(doc, "links")):
        where = f"[[links]] #{i + 1}"
        _check_keys(where, t, _LINK_KEYS)
        a = _ident(f"{where} a", t.get("a"))
        b = _ident(f"{where} b", t.get("b"))
        for end in (a, b):
            if end not in ids:
                raise ConfigError(f"{where} joins {end!r}, which is not in [[nodes]]")
        if a == b:
            raise ConfigError(f"{where} joins {a!r} to itself")
        if frozenset((a, b)) in pairs:
            raise ConfigError(f"{where}: {a!r} and {b!r} are already joined by a link")
        pairs.add(frozenset((a, b)))
        lid = _ident(f"{where} id", t.get("id", f"{a}-{b}"))
        if "distance_km" not in t and "distance_km" not in defaults:
            raise ConfigError(f"{where} ({lid}) needs distance_km (or set it in [defaults])")
        km = _km(f"{where} ({lid}) distance_km", t.get("distance_km", defaults.get("distance_km")))
        params = dict(defaults.get("params", {}))
        extra = t.get("params", {})
        if not isinstance(extra, dict):
            raise ConfigError(f"{where} ({lid}) params must be a table")
        params.update(extra)
        fidelity = t.get("fidelity", network_fidelity)
        if fidelity not in FIDELITIES:
            raise ConfigError(f'{where} ({lid}) fidelity must be "physics" or "emulated"')
        links.append(LinkSpec(lid, a, b, km, params, fidelity))
    lids = [link.id for link in links]
    if len(set(lids)) != len(lids):
        dup = next(x for x in lids if lids.count(x) > 1)
        raise ConfigError(f"link ID {dup!r} appears twice in [[links]]")
    if not links:
        raise ConfigError("a topology needs at least one [[links]] entry")
    saes: list[SaeSpec] = []
    for i, t in enumerate(_table_list(doc, "saes")):
        where = f"[[saes]] #{i + 1}"
        _check_keys(where, t, _SAE_KEYS)
        sid = t.get("id")
        if not isinstance(sid, str) or not valid_sae_id(sid):
            raise ConfigError(f"{where} id = {sid!r} is not a valid SAE ID")
        node = t.get("node")
        if node not in ids:
            raise ConfigError(f"{where} ({sid}) node = {node!r} is not in [[nodes]]")
        saes.append(SaeSpec(sid, str(node)))
    names = [*ids, *lids, *(s.id for s in saes)]
    if len(set(names)) != len(names):
        dup = next(x for x in names if names.count(x) > 1)
        raise ConfigError(f"{dup!r} is used twice: node, link and SAE IDs must all be distinct")
    return Topology(name, description, tuple(nodes), tuple(links), tuple(saes))


def with_fidelity(topology: Topology, fidelity: str) -> Topology:
    """``topology`` with every link at ``fidelity`` (``network --fidelity``)."""
    if fidelity not in FIDELITIES:
        raise ConfigError('fidelity must be "physics" or "emulated"')
    links = tuple(dataclasses.replace(link, fidelity=fidelity) for link in topology.links)
    return dataclasses.replace(topology, links=links)


def shipped_topologies() -> list[str]:
    """Names of the topologies shipped with the package (``--topology NAME``)."""
    folder = resources.files("keyserver.network") / "topologies"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_topology(name_or_path: str) -> Topology:
    """A shipped topology by name, or a TOML file by path (a directory or other file that
    happens to bear a shipped topology's name in the working directory does not hide it)."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or (path.is_file() and name_or_path not in shipped_topologies()):
        return parse_topology(load_toml(path, "topology"), path.stem)
    if name_or_path not in shipped_topologies():
        raise ConfigError(
            f"no topology named {name_or_path!r}: use one of "
            f"{', '.join(shipped_topologies())} or the path of a .toml file"
        )
    res = resources.files("keyserver.network") / "topologies" / f"{name_or_path}.toml"
    doc = parse_toml(res.read_text(encoding="utf-8"), f"topology {name_or_path}")
    return parse_topology(doc, name_or_path)
