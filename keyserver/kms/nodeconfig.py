"""KMS node configuration: ``qkd-keyserver node --config FILE.toml`` (written by the launcher).

Strictly validated: unknown sections or keys are refused, relative paths are relative to the
file, every error names the setting to fix. The format (see also docs/network.md)::

    [node]
    id = "beijing"                  # node ID = CN of its node-domain certificate
    data_dir = "nodes/beijing"
    synchronous = "OFF"             # SQLite: OFF (survives a process kill), NORMAL or FULL
    testing = false                 # true only in tests: allows the record_* settings
    record_dir = ""                 # testing: every node-to-node message, as JSON lines
    record_view = false             # testing: also what this node sees in the clear

    [sae_api]                       # ETSI GS QKD 014 for the SAEs at this node (SAE domain)
    host = "127.0.0.1"
    port = 8441
    ca_cert = "pki/sae-ca/ca.pem"
    cert = "pki/sae/node-beijing.pem"
    key = "pki/sae/node-beijing.key"

    [node_api]                      # node-to-node: sync, link state, relay (node domain)
    host = "127.0.0.1"
    port = 9441
    ca_cert = "pki/node-ca/ca.pem"
    cert = "pki/node/beijing.pem"
    key = "pki/node/beijing.key"
    admin = "network-admin"         # CN allowed to read GET /kms/v1/state

    [module_client]                 # towards this node's QKD modules (module domain)
    ca_cert = "pki/module-ca/ca.pem"
    cert = "pki/module/node-beijing.pem"
    key = "pki/module/node-beijing.key"

    [keys]                          # ETSI 014 limits for SAEs (bits) and key management
    key_size = 256
    min_key_size = 64
    max_key_size = 65536
    max_key_per_request = 128
    max_key_count = 100000          # link-key stock cap per stream, in keys of key_size
    hold_seconds = 300              # a key not collected by its slave SAE is voided after this
    relay_timeout_seconds = 10      # a master SAE waits at most this for the far end's ack
    quota_bits_per_pair = 16777216  # most uncollected key held for one (master, slave) pair,
                                    # capped by one local SAE's share of max_key_count
    sae_stock_share = true          # each local SAE draws at most its 1/n share of a link's
                                    # stock (docs/keyserver.md, "Quotas")

    [http]                          # optional: limits of both listeners (seconds; defaults shown)
    tls_handshake_timeout = 10
    header_timeout = 10
    body_timeout = 10
    idle_timeout = 30
    max_connections = 1024
    max_connections_per_client = 64

    [routing]
    multipath = 1                   # k: XOR shares over k node-disjoint routes
    direct_one_hop = true           # a one-hop route: a direct key, no relay (kms/directkey.py)
    lsa_interval_seconds = 1.0      # least time between two floods when a link goes up/down
    lsa_batch_seconds = 5.0         # least time between floods of stock changes and forwards
    lsa_refresh_seconds = 30.0      # own LSA re-flooded this often when nothing changes
    lsa_max_age_seconds = 100.0     # an LSA older than this is silence (> 2 x refresh)

    [timers]                        # optional: idle behaviour (seconds; defaults shown)
    module_watch_seconds = 30.0     # a module that can be watched holds a status request until
                                    # something changes, at most this long (0: never watch)
    module_poll_seconds = 5.0       # module status (one that cannot be watched) while the link
                                    # holds key and nothing happens
    hungry_poll_seconds = 1.0       # ... while the link is below a quarter of its cap or unsynced
    sync_heartbeat_seconds = 10.0   # transmitter-side sync when nothing else happens
    neighbour_timeout_seconds = 30.0  # receiver side: no sync for this long = neighbour down
    dead_misses = 1                 # module status requests / syncs failing in a row = down
    request_timeout_seconds = 3.0   # a request to a module or a neighbour node: no answer
    jitter = 0.1                    # every idle timer is drawn within +-10 % of its value

    [[modules]]                     # this node's QKD modules (any ETSI 014 KME works)
    link = "beijing-langfang"
    id = "QKD-beijing-langfang-tx"  # CN of the module's server certificate
    url = "https://127.0.0.1:9001"
    remote_sae = "langfang"         # optional: the slave/master ID to use in the ETSI paths

    [[nodes]]                       # every node of the network
    id = "langfang"
    url = "https://127.0.0.1:9442"  # its node_api

    [[links]]                       # every link: a = transmitter side, b = receiver side
    id = "beijing-langfang"
    a = "beijing"
    b = "langfang"
    distance_km = 65.0

    [[saes]]
    id = "alice"
    node = "beijing"
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from keyserver.configfile import ConfigError as ConfigError  # the package's one (re-exported)
from keyserver.configfile import load_toml
from keyserver.etsi014.messages import Limits, valid_sae_id
from keyserver.etsi014.server import HttpLimits
from keyserver.etsi014.statuswatch import MAX_WAIT_S
from keyserver.topology import LinkSpec, NodeSpec, SaeSpec, Topology
from keyserver.topology import parse_topology as _parse_topology


@dataclass(frozen=True)
class Tls:
    ca_cert: Path
    cert: Path
    key: Path


@dataclass(frozen=True)
class Listener:
    host: str
    port: int
    tls: Tls


@dataclass(frozen=True)
class ModuleRef:
    link: str
    id: str
    url: str
    remote_sae: str | None


@dataclass(frozen=True)
class Timers:
    """How often an idle node looks at things (docs/network.md, "Timings").

    Nothing here runs while something else already tells the node: a relay's spend wakes the
    transmitter side at once, an answered announcement or sync is proof of the neighbour, a
    link going up or down is flooded at once (at most every ``lsa_interval`` seconds).
    """

    module_poll: float = 5.0
    hungry_poll: float = 1.0
    # a module that can be watched (keyserver.etsi014.statuswatch) holds its node's Get status
    # until something changes, at most this long; the polls above are for a KME that cannot
    # (0: never watch)
    module_watch: float = 30.0
    sync_heartbeat: float = 10.0
    neighbour_timeout: float = 30.0
    # a link goes down when this many module status requests in a row failed (its module),
    # or this many syncs in a row (transmitter side: its neighbour); an alarm or an abort the
    # module reports is never delayed by it
    dead_misses: int = 1
    # a module's or a neighbour node's answer is given up after this (a loaded machine of 500
    # processes needs longer: a request given up is a reconnect, a TLS handshake, more load)
    request_timeout: float = 3.0
    lsa_batch: float = 5.0
    lsa_refresh: float = 30.0
    jitter: float = 0.1


@dataclass(frozen=True)
class NodeConfig:
    id: str
    data_dir: Path
    synchronous: Literal["OFF", "NORMAL", "FULL"]
    testing: bool
    record_dir: Path | None
    record_view: bool
    sae_api: Listener
    node_api: Listener
    admin: str
    module_tls: Tls
    limits: Limits
    max_key_count: int
    hold_seconds: float
    relay_timeout: float
    quota_bits_per_pair: int
    multipath: int
    lsa_interval: float
    lsa_max_age: float
    modules: tuple[ModuleRef, ...]
    node_urls: dict[str, str]
    topology: Topology
    http: HttpLimits = field(default_factory=HttpLimits)
    timers: Timers = field(default_factory=lambda: Timers())
    sae_stock_share: bool = True  # each local SAE its share of every link's stock
    direct_one_hop: bool = True  # a one-hop route with multipath 1: a direct key, no relay

    def local_links(self) -> list[LinkSpec]:
        return self.topology.links_of(self.id)

    def module_for(self, link: str) -> ModuleRef:
        return next(m for m in self.modules if m.link == link)

    def local_saes(self) -> list[str]:
        return [s.id for s in self.topology.saes if s.node == self.id]


_SECTIONS: dict[str, set[str]] = {
    "node": {"id", "data_dir", "synchronous", "testing", "record_dir", "record_view"},
    "sae_api": {"host", "port", "ca_cert", "cert", "key"},
    "node_api": {"host", "port", "ca_cert", "cert", "key", "admin"},
    "module_client": {"ca_cert", "cert", "key"},
    "keys": {
        "key_size",
        "min_key_size",
        "max_key_size",
        "max_key_per_request",
        "max_key_count",
        "hold_seconds",
        "relay_timeout_seconds",
        "quota_bits_per_pair",
        "sae_stock_share",
    },
    "routing": {
        "multipath",
        "direct_one_hop",
        "lsa_interval_seconds",
        "lsa_batch_seconds",
        "lsa_refresh_seconds",
        "lsa_max_age_seconds",
    },
    "timers": {
        "module_poll_seconds",
        "hungry_poll_seconds",
        "module_watch_seconds",
        "sync_heartbeat_seconds",
        "neighbour_timeout_seconds",
        "dead_misses",
        "request_timeout_seconds",
        "jitter",
    },
    "http": {
        "tls_handshake_timeout",
        "header_timeout",
        "body_timeout",
        "idle_timeout",
        "max_connections",
        "max_connections_per_client",
    },
}
_ARRAYS: dict[str, set[str]] = {
    "modules": {"link", "id", "url", "remote_sae"},
    "nodes": {"id", "url"},
    "links": {"id", "a", "b", "distance_km", "params"},
    "saes": {"id", "node"},
}


def _get(doc: dict[str, Any], section: str, name: str, kind: Any, default: Any = ...) -> Any:
    sec = doc.get(section, {})
    if name not in sec:
        if default is ...:
            raise ConfigError(f"[{section}] {name} is missing: add it to the config file")
        return default
    v = sec[name]
    if (isinstance(v, bool) and kind is not bool) or not isinstance(v, kind):
        raise ConfigError(f"[{section}] {name} = {v!r} has the wrong type")
    return v


def parse_node_config(doc: dict[str, Any], base: Path) -> NodeConfig:
    for section, value in doc.items():
        if section in _SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"[{section}] must be a table")
            unknown = sorted(set(value) - _SECTIONS[section])
        elif section in _ARRAYS:
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                raise ConfigError(f"[[{section}]] must be an array of tables")
            unknown = sorted({k for v in value for k in v} - _ARRAYS[section])
        else:
            raise ConfigError(
                f"unknown section [{section}]; expected {sorted(_SECTIONS) + sorted(_ARRAYS)}"
            )
        if unknown:
            raise ConfigError(f"[{section}] has unknown key {unknown[0]!r}")

    def path(section: str, name: str, must_exist: bool = True) -> Path:
        p = Path(_get(doc, section, name, str)).expanduser()
        p = p if p.is_absolute() else (base / p).resolve()
        if must_exist and not p.is_file():
            raise ConfigError(f"[{section}] {name} = {str(p)!r} does not exist: fix the path")
        return p

    def tls(section: str) -> Tls:
        return Tls(path(section, "ca_cert"), path(section, "cert"), path(section, "key"))

    def listener(section: str) -> Listener:
        port = _get(doc, section, "port", int)
        if not 0 <= port <= 65535:
            raise ConfigError(f"[{section}] port = {port} is not a TCP port")
        return Listener(_get(doc, section, "host", str, "127.0.0.1"), port, tls(section))

    node_id = _get(doc, "node", "id", str)
    sync = _get(doc, "node", "synchronous", str, "OFF").upper()
    if sync not in ("OFF", "NORMAL", "FULL"):
        raise ConfigError('[node] synchronous must be "OFF", "NORMAL" or "FULL"')
    testing = _get(doc, "node", "testing", bool, False)
    record_raw = _get(doc, "node", "record_dir", str, "")
    record_view = _get(doc, "node", "record_view", bool, False)
    if (record_raw or record_view) and not testing:
        raise ConfigError("[node] record_dir and record_view need testing = true (tests only)")
    record_dir = None
    if record_raw:
        rp = Path(record_raw).expanduser()
        record_dir = rp if rp.is_absolute() else (base / rp).resolve()
    try:
        limits = Limits(
            key_size=_get(doc, "keys", "key_size", int, 256),
            min_key_size=_get(doc, "keys", "min_key_size", int, 64),
            max_key_size=_get(doc, "keys", "max_key_size", int, 65536),
            max_key_per_request=_get(doc, "keys", "max_key_per_request", int, 128),
        )
    except ValueError as e:
        raise ConfigError(f"[keys] {e}") from None

    def positive(section: str, name: str, kind: Any, default: Any) -> Any:
        v = _get(doc, section, name, kind, default)
        if v <= 0:
            raise ConfigError(f"[{section}] {name} must be > 0")
        return v

    topo_doc = {k: doc.get(k, []) for k in ("nodes", "links", "saes")}
    topo_doc["nodes"] = [{"id": n.get("id")} for n in topo_doc["nodes"]]
    topology = _parse_topology(topo_doc, "network")  # its mistakes are ConfigErrors too
    if node_id not in topology.node_ids():
        raise ConfigError(f"[node] id = {node_id!r} is not one of the [[nodes]]")
    urls: dict[str, str] = {}
    for n in doc.get("nodes", []):
        url = n.get("url")
        if not isinstance(url, str) or not url.startswith("https://"):
            raise ConfigError(f"[[nodes]] {n.get('id')}: url must be an https:// URL")
        urls[str(n["id"])] = url.rstrip("/")
    modules: list[ModuleRef] = []
    for m in doc.get("modules", []):
        for k in ("link", "id", "url"):
            if not isinstance(m.get(k), str):
                raise ConfigError(f"[[modules]] needs {k} (a string)")
        if not m["url"].startswith("https://"):
            raise ConfigError(f"[[modules]] {m['id']}: url must be an https:// URL")
        remote = m.get("remote_sae")
        if remote is not None and (not isinstance(remote, str) or not valid_sae_id(remote)):
            raise ConfigError(f"[[modules]] {m['id']}: remote_sae must be an SAE ID")
        try:
            link = topology.link(m["link"])
        except KeyError:
            raise ConfigError(
                f"[[modules]] {m['id']}: link {m['link']!r} is not in [[links]]"
            ) from None
        if node_id not in (link.a, link.b):
            raise ConfigError(f"[[modules]] {m['id']}: link {link.id} does not end at {node_id}")
        modules.append(ModuleRef(link.id, m["id"], m["url"].rstrip("/"), remote))
    mine = {link.id for link in topology.links_of(node_id)}
    missing = sorted(mine - {m.link for m in modules})
    if missing:
        raise ConfigError(f"link {missing[0]} ends at {node_id} but has no [[modules]] entry")
    defaults = HttpLimits()
    try:
        http = HttpLimits(
            **{
                name: _get(
                    doc,
                    "http",
                    name,
                    int if name.startswith("max_") else (int, float),
                    getattr(defaults, name),
                )
                for name in sorted(_SECTIONS["http"])
            }
        )
    except ValueError as e:
        raise ConfigError(f"[http] {e}") from None
    multipath = positive("routing", "multipath", int, 1)
    if multipath > 8:
        raise ConfigError("[routing] multipath must be within 1..8")
    num = (int, float)
    timers = Timers(
        module_poll=float(positive("timers", "module_poll_seconds", num, 5.0)),
        hungry_poll=float(positive("timers", "hungry_poll_seconds", num, 1.0)),
        module_watch=float(_get(doc, "timers", "module_watch_seconds", num, 30.0)),
        sync_heartbeat=float(positive("timers", "sync_heartbeat_seconds", num, 10.0)),
        neighbour_timeout=float(positive("timers", "neighbour_timeout_seconds", num, 30.0)),
        dead_misses=int(positive("timers", "dead_misses", int, 1)),
        request_timeout=float(positive("timers", "request_timeout_seconds", num, 3.0)),
        lsa_batch=float(positive("routing", "lsa_batch_seconds", num, 5.0)),
        lsa_refresh=float(positive("routing", "lsa_refresh_seconds", num, 30.0)),
        jitter=float(_get(doc, "timers", "jitter", num, 0.1)),
    )
    if not 0 <= timers.jitter <= 0.5:
        raise ConfigError("[timers] jitter must be within 0..0.5")
    if not 0 <= timers.module_watch * (1 + timers.jitter) <= MAX_WAIT_S:
        raise ConfigError(
            f"[timers] module_watch_seconds x (1 + jitter) must be within 0..{MAX_WAIT_S:g} "
            "(what a module holds a watched Get status at most; 0: never watch)"
        )
    if timers.neighbour_timeout < 2 * timers.sync_heartbeat * (1 + timers.jitter):
        raise ConfigError(
            "[timers] neighbour_timeout_seconds must be at least twice "
            "sync_heartbeat_seconds (with jitter): raise it"
        )
    lsa_max_age = float(positive("routing", "lsa_max_age_seconds", num, 100.0))
    if lsa_max_age < 2 * timers.lsa_refresh * (1 + timers.jitter) + timers.lsa_batch:
        raise ConfigError(
            "[routing] lsa_max_age_seconds must exceed twice lsa_refresh_seconds "
            "(with jitter) plus lsa_batch_seconds: raise it"
        )
    return NodeConfig(
        id=node_id,
        data_dir=path("node", "data_dir", must_exist=False),
        synchronous=sync,
        testing=testing,
        record_dir=record_dir,
        record_view=record_view,
        sae_api=listener("sae_api"),
        node_api=listener("node_api"),
        admin=_get(doc, "node_api", "admin", str, "network-admin"),
        module_tls=tls("module_client"),
        limits=limits,
        max_key_count=positive("keys", "max_key_count", int, 100_000),
        hold_seconds=float(positive("keys", "hold_seconds", (int, float), 300)),
        relay_timeout=float(positive("keys", "relay_timeout_seconds", (int, float), 10)),
        quota_bits_per_pair=positive("keys", "quota_bits_per_pair", int, 16 * 2**20),
        multipath=multipath,
        lsa_interval=float(positive("routing", "lsa_interval_seconds", (int, float), 1.0)),
        lsa_max_age=lsa_max_age,
        modules=tuple(modules),
        node_urls=urls,
        topology=Topology(
            topology.name,
            "",
            tuple(NodeSpec(n.id, n.city) for n in topology.nodes),
            topology.links,
            tuple(SaeSpec(s.id, s.node) for s in topology.saes),
        ),
        http=http,
        timers=timers,
        sae_stock_share=_get(doc, "keys", "sae_stock_share", bool, True),
        direct_one_hop=_get(doc, "routing", "direct_one_hop", bool, True),
    )


def load_node_config(file: Path) -> NodeConfig:
    return parse_node_config(load_toml(file), file.resolve().parent)
