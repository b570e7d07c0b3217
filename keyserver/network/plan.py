"""Where everything of one network lives: ports, directories, certificates, config files.

:func:`make_plan` lays a topology out in a directory (sans-I/O apart from probing for free
ports); :func:`write_configs` creates the PKI, the links' pre-shared authentication keys and
every module and node config file (formats: the module config of the QKD layer's contract,
:mod:`keyserver.kms.nodeconfig` for nodes). Layout of ``DIR``::

    pki/{sae,node,module}-ca/   the three CAs      pki/{sae,node,module}/  certificates, keys
    links/<link>.authkey        pre-shared initial authentication key of each link (0600)
    links/<link>.channelkey     key that seals each link's quantum channel (0600)
    modules/<module>.toml       module configs     modules/<module>/       their data
    nodes/<node>.toml           node configs       nodes/<node>/           their data
    logs/<process>.log          every process's log
    saes/<sae>.toml             a qphone profile per SAE
    network.json                what is running where (written once everything answers)
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keyserver.etsi014.server import HttpLimits
from keyserver.pki.domains import ADMIN_CN, NetworkPki, ensure_link_auth_key
from keyserver.ports import HOST, free_ports
from keyserver.qkd.role import Role
from keyserver.qkd.sealedchannel import new_channel_key
from keyserver.topology import LinkSpec, Topology, with_fidelity

MODULE_KEY_BITS = 1024  # the key size the modules serve: the granularity of link keys
MODULE_MAX_KEYS = 4096
# In a network of more than BIG_NETWORK_SITES sites a node polls a module that has no key for it
# yet every BIG_NETWORK_HUNGRY_POLL_S seconds, not every second: while hefei-metro-full starts,
# 342 modules polled each second cost the machine about a core in HTTPS requests (docs/network.md
# §6); a link's first key is noticed at most that much later.
BIG_NETWORK_SITES = 50
BIG_NETWORK_HUNGRY_POLL_S = 3.0
# ... its stock caps are at most these (node: keys of key_size per stream; module: keys of
# BIG_NETWORK_MODULE_KEY_BITS), and its modules serve larger keys: every key costs both modules
# and both nodes a key ID, a store row and its part of an HTTPS body, and 171 links filling
# 8 Mbit of node stock and 4 Mbit of module stock each in keys of 1024 bits took two cores for
# minutes while hefei-metro-full started (docs/network.md, "Start-up at 167 sites"); capped,
# a link holds 512 kbit per direction at its nodes and 512 kbit at its module, in 8 times
# fewer keys (the node cuts SAE keys of any size from its streams as before)
BIG_NETWORK_MAX_KEYS = 2048
BIG_NETWORK_MODULE_KEY_BITS = 8192
BIG_NETWORK_MODULE_MAX_KEYS = 64
# ... and its nodes tolerate a starting machine: a link goes down after this many module status
# requests or syncs in a row failed (not one), and a receiver times its neighbour out after
# BIG_NETWORK_NEIGHBOUR_TIMEOUT_S without a sync
BIG_NETWORK_DEAD_MISSES = 3
BIG_NETWORK_NEIGHBOUR_TIMEOUT_S = 60.0
BIG_NETWORK_REQUEST_TIMEOUT_S = 10.0  # (3 s by default: core nodes timed out at load 150-250)
# ... and re-floods an unchanged LSA every BIG_NETWORK_LSA_REFRESH_S (30 s by default): every
# refresh crosses every link of the network, so 170 nodes refreshing every 30 s kept about 1,100
# LSAs a second in flight on an idle china-backbone. Changes are flooded when they happen, so
# the refresh only ages out what a partitioned network can no longer tell (OSPF refreshes every
# 30 minutes, RFC 2328 appendix B: LSRefreshTime, MaxAge)
BIG_NETWORK_LSA_REFRESH_S = 300.0
BIG_NETWORK_LSA_MAX_AGE_S = 1000.0
# the module that hosts the simulated fibre's eavesdropper (docs/bb84.md)
EVE_ROLE = Role.TRANSMITTER


def port_free(port: int, host: str = HOST) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class ModulePlan:
    id: str
    link: str
    role: Role
    node: str
    remote_node: str
    port: int
    data_dir: Path
    config: Path
    log: Path
    host: str = HOST  # the address of its site (its node's)

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"


@dataclass(frozen=True)
class NodePlan:
    id: str
    sae_port: int
    node_port: int
    data_dir: Path
    config: Path
    log: Path
    host: str = HOST  # the address of its site

    @property
    def sae_url(self) -> str:
        return f"https://{self.host}:{self.sae_port}"

    @property
    def node_url(self) -> str:
        return f"https://{self.host}:{self.node_port}"


@dataclass(frozen=True)
class Options:
    seed: int | None = None
    eve: dict[str, float] = field(default_factory=dict)  # link -> intercept fraction at start
    distance_km: float | None = None  # overrides every link's length (the demo's flag)
    max_key_count: int = 16_384  # node stock cap per stream, in keys of key_size (4 Mbit)
    multipath: int = 1
    direct_one_hop: bool = True  # a one-hop route gives a direct key (kms/directkey.py)
    testing: bool = False
    record: bool = False  # testing: nodes record node-to-node messages in DIR/records
    record_view: bool = False
    hold_seconds: float = 300.0
    relay_timeout: float = 10.0
    key_size: int = 256
    module_max_keys: int = MODULE_MAX_KEYS  # a module pauses when it holds this many keys
    module_params: dict[str, Any] = field(default_factory=dict)
    http: HttpLimits | None = None  # listener limits of the nodes (None: the defaults)
    fidelity: str | None = None  # "physics" | "emulated": every link, whatever the topology says
    site_hosts: bool = False  # one process per site for its emulated modules (where 2 or more)


@dataclass(frozen=True)
class NetworkPlan:
    directory: Path
    topology: Topology
    options: Options
    nodes: dict[str, NodePlan]
    modules: dict[str, ModulePlan]  # module ID -> plan
    channels: dict[str, tuple[int, int]]  # link -> (quantum, classical) port

    def server_names(self) -> dict[str, tuple[str, ...]]:
        """Addresses each node's and module's server certificate must name (none on loopback)."""
        hosts = {n.id: n.host for n in self.nodes.values()}
        hosts |= {m.id: m.host for m in self.modules.values()}
        return {x: () if h == HOST else (h,) for x, h in hosts.items()}

    def modules_of(self, link: str) -> list[ModulePlan]:
        return [m for m in self.modules.values() if m.link == link]

    def eve_module(self, link: str) -> ModulePlan:
        return next(m for m in self.modules_of(link) if m.role == EVE_ROLE)

    def profile(self, sae: str) -> Path:
        return self.directory / "saes" / f"{sae}.toml"

    def site_hosts(self) -> dict[str, list[ModulePlan]]:
        """With ``Options.site_hosts``: per node (site), its emulated modules where there are
        two or more; one process hosts them (``modules@<node>``, docs/network.md)."""
        if not self.options.site_hosts:
            return {}
        by_node: dict[str, list[ModulePlan]] = {}
        for m in self.modules.values():
            if self.topology.link(m.link).fidelity == "emulated":
                by_node.setdefault(m.node, []).append(m)
        return {n: ms for n, ms in by_node.items() if len(ms) >= 2}

    def site_host_files(self, node: str) -> tuple[Path, Path]:
        """(host file, log) of the process that hosts `node`'s emulated modules."""
        return (
            self.directory / "modules" / f"site-{node}.toml",
            self.directory / "logs" / f"site-{node}.log",
        )

    def process_of(self, name: str) -> str:
        """The process that runs module or node `name` (its own, or its site's host)."""
        m = self.modules.get(name)
        if m is not None and any(m in ms for ms in self.site_hosts().values()):
            return f"modules@{m.node}"
        return name

    def processes(self) -> list[tuple[str, Path, Path, str]]:
        """(name, config, log, subcommand) of every process, modules first (a site host's
        config is a file naming its modules' configs, keyserver.qkd.config)."""
        hosts = self.site_hosts()
        hosted = {m.id for ms in hosts.values() for m in ms}
        out = [
            (m.id, m.config, m.log, "module") for m in self.modules.values() if m.id not in hosted
        ]
        out += [(f"modules@{n}", *self.site_host_files(n), "module") for n in hosts]
        out += [(n.id, n.config, n.log, "node") for n in self.nodes.values()]
        return out


def module_id(link: str, role: Role) -> str:
    return f"QKD-{link}-{'tx' if role is Role.TRANSMITTER else 'rx'}"


def make_plan(
    directory: Path,
    topology: Topology,
    options: Options,
    sae_ports: dict[str, int] | None = None,
    *,
    hosts: dict[str, str] | None = None,
    port_base: int | None = None,
) -> NetworkPlan:
    """Lay out the network; `sae_ports` pins some nodes' SAE API ports, the rest are free ports
    (or consecutive from `port_base`: sites on their own hosts or namespaces, where probing
    this host's ports means nothing); `hosts` gives each node (site) its own address
    (default: all on 127.0.0.1)."""
    d = directory.resolve()
    if options.fidelity is not None:
        topology = with_fidelity(topology, options.fidelity)
    pinned = sae_ports or {}
    where = hosts or {}
    need = 2 * len(topology.nodes) + 4 * len(topology.links)
    if port_base is None:
        ports = iter(free_ports(need, set(pinned.values())))
    else:
        ports = iter(p for p in range(port_base, 65536) if p not in set(pinned.values()))
    nodes = {
        n.id: NodePlan(
            n.id,
            pinned.get(n.id) or next(ports),
            next(ports),
            d / "nodes" / n.id,
            d / "nodes" / f"{n.id}.toml",
            d / "logs" / f"node-{n.id}.log",
            where.get(n.id, HOST),
        )
        for n in topology.nodes
    }
    modules: dict[str, ModulePlan] = {}
    channels: dict[str, tuple[int, int]] = {}
    for link in topology.links:
        channels[link.id] = (next(ports), next(ports))
        ends = ((Role.TRANSMITTER, link.a, link.b), (Role.RECEIVER, link.b, link.a))
        for role, node, remote in ends:
            mid = module_id(link.id, role)
            modules[mid] = ModulePlan(
                mid,
                link.id,
                role,
                node,
                remote,
                next(ports),
                d / "modules" / mid,
                d / "modules" / f"{mid}.toml",
                d / "logs" / f"{mid}.log",
                where.get(node, HOST),
            )
    return NetworkPlan(d, topology, options, nodes, modules, channels)


def _s(v: Any) -> str:
    return json.dumps(str(v))  # a JSON string is a TOML basic string


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return _s(v)


def _distance(plan: NetworkPlan, link: LinkSpec) -> float:
    o = plan.options.distance_km
    return float(o) if o is not None else link.distance_km


def module_config_text(plan: NetworkPlan, m: ModulePlan, pki: NetworkPki) -> str:
    link = plan.topology.link(m.link)
    q, c = plan.channels[m.link]
    # the receiver listens on both channels at its site; the transmitter dials it there
    chost = m.host if m.role is Role.RECEIVER else plan.nodes[m.remote_node].host
    certs = pki.module(m.id)
    o = plan.options
    lines = [
        "[module]",
        f"id = {_s(m.id)}",
        f"link = {_s(m.link)}",
        f"role = {_s(m.role)}",
        f"data_dir = {_s(m.data_dir)}",
        f"testing = {_value(o.testing or o.seed is not None)}",
        f"fidelity = {_s(link.fidelity)}",
        f"plan_cache = {_s(plan.directory / 'plans')}",  # each distinct link planned once
    ]
    if o.seed is not None:
        lines.append(f"seed = {int(o.seed) * 1000 + sorted(plan.channels).index(m.link)}")
    lines += [
        "",
        "[northbound]",
        f"host = {_s(m.host)}",
        f"port = {m.port}",
        f"ca_cert = {_s(pki.ca_cert('module'))}",
        f"cert = {_s(certs.cert)}",
        f"key = {_s(certs.key)}",
        f"local_node = {_s(m.node)}",
        f"remote_node = {_s(m.remote_node)}",
        f"admin = {_s(ADMIN_CN)}",
        f"key_size = {BIG_NETWORK_MODULE_KEY_BITS if big_network(plan) else MODULE_KEY_BITS}",
        f"max_key_count = {_module_max_keys(plan)}",
        "max_key_per_request = 1024",
        "",
        "[quantum_channel]",
        f"address = {_s(f'{chost}:{q}')}",
        f"channel_key = {_s(plan.directory / 'links' / f'{m.link}.channelkey')}",
        f"distance_km = {_distance(plan, link)!r}",
        f"eve_fraction = {float(o.eve.get(m.link, 0.0))!r}",
    ]
    params = {**o.module_params, **link.params}
    if params:
        lines += ["", "[quantum_channel.params]"]
        lines += [f"{k} = {_value(v)}" for k, v in sorted(params.items())]
    lines += [
        "",
        "[classical_channel]",
        f"address = {_s(f'{chost}:{c}')}",
        f"initial_auth_key = {_s(plan.directory / 'links' / f'{m.link}.authkey')}",
    ]
    return "\n".join(lines) + "\n"


def node_config_text(plan: NetworkPlan, n: NodePlan, pki: NetworkPki) -> str:
    creds = pki.node(n.id)
    o = plan.options
    lines = [
        "[node]",
        f"id = {_s(n.id)}",
        f"data_dir = {_s(n.data_dir)}",
        f"testing = {_value(o.testing)}",
    ]
    if o.record:
        lines.append(f"record_dir = {_s(plan.directory / 'records')}")
    if o.record_view:
        lines.append("record_view = true")
    lines += [
        "",
        "[sae_api]",
        f"host = {_s(n.host)}",
        f"port = {n.sae_port}",
        f"ca_cert = {_s(creds.sae_ca)}",
        f"cert = {_s(creds.sae_server.cert)}",
        f"key = {_s(creds.sae_server.key)}",
        "",
        "[node_api]",
        f"host = {_s(n.host)}",
        f"port = {n.node_port}",
        f"ca_cert = {_s(creds.node_ca)}",
        f"cert = {_s(creds.node.cert)}",
        f"key = {_s(creds.node.key)}",
        f"admin = {_s(ADMIN_CN)}",
        "",
        "[module_client]",
        f"ca_cert = {_s(creds.module_ca)}",
        f"cert = {_s(creds.module_client.cert)}",
        f"key = {_s(creds.module_client.key)}",
        "",
        "[keys]",
        f"key_size = {o.key_size}",
        "min_key_size = 64",
        "max_key_size = 65536",
        "max_key_per_request = 128",
        f"max_key_count = {_node_max_keys(plan)}",
        f"hold_seconds = {float(o.hold_seconds)!r}",
        f"relay_timeout_seconds = {float(o.relay_timeout)!r}",
        "",
        *(
            [""] + ["[http]"] + [f"{k} = {v!r}" for k, v in sorted(vars(o.http).items())]
            if o.http is not None
            else []
        ),
        "",
        "[routing]",
        f"multipath = {o.multipath}",
        f"direct_one_hop = {'true' if o.direct_one_hop else 'false'}",
        "lsa_interval_seconds = 1.0",  # the rest of [routing] and [timers]: defaults
    ]
    if big_network(plan):
        lines += [
            f"lsa_refresh_seconds = {BIG_NETWORK_LSA_REFRESH_S!r}",
            f"lsa_max_age_seconds = {BIG_NETWORK_LSA_MAX_AGE_S!r}",
            "",
            "[timers]",
            f"hungry_poll_seconds = {BIG_NETWORK_HUNGRY_POLL_S!r}",
            f"dead_misses = {BIG_NETWORK_DEAD_MISSES}",
            f"neighbour_timeout_seconds = {BIG_NETWORK_NEIGHBOUR_TIMEOUT_S!r}",
            f"request_timeout_seconds = {BIG_NETWORK_REQUEST_TIMEOUT_S!r}",
        ]
    for m in plan.modules.values():
        if m.node == n.id:
            lines += [
                "",
                "[[modules]]",
                f"link = {_s(m.link)}",
                f"id = {_s(m.id)}",
                f"url = {_s(m.url)}",
            ]
    for other in plan.nodes.values():
        lines += ["", "[[nodes]]", f"id = {_s(other.id)}", f"url = {_s(other.node_url)}"]
    for link in plan.topology.links:
        lines += [
            "",
            "[[links]]",
            f"id = {_s(link.id)}",
            f"a = {_s(link.a)}",
            f"b = {_s(link.b)}",
            f"distance_km = {_distance(plan, link)!r}",
        ]
    for sae in plan.topology.saes:
        lines += ["", "[[saes]]", f"id = {_s(sae.id)}", f"node = {_s(sae.node)}"]
    return "\n".join(lines) + "\n"


def profile_text(plan: NetworkPlan, pki: NetworkPki, sae: str, peer: str) -> str:
    """A qphone profile (the format ``qkd-keyserver demo`` always wrote)."""
    node = plan.topology.sae_node(sae)
    assert node is not None
    certs = pki.sae(sae)
    d = plan.profile(sae).parent
    return "\n".join(
        [
            "[sae]",
            f"id = {_s(sae)}",
            "",
            "[kme]",
            f"url = {_s(plan.nodes[node].sae_url)}",
            f"ca_cert = {_s(pki.ca_cert('sae'))}",
            f"client_cert = {_s(certs.cert)}",
            f"client_key = {_s(certs.key)}",
            "",
            "[peer]",
            f"sae_id = {_s(peer)}",
            "",
            "[identity]",
            f"file = {_s(d / f'{sae}.identity')}",
            f"known_peers = {_s(d / f'{sae}.known_peers.json')}",
            "",
        ]
    )


def default_peer(topology: Topology, sae: str) -> str:
    """The SAE a profile calls by default: the next SAE at another node (alice <-> bob)."""
    others = [s for s in topology.saes if s.id != sae]
    node = topology.sae_node(sae)
    far = [s for s in others if s.node != node] or others
    if sae == "alice" and any(s.id == "bob" for s in far):
        return "bob"
    if sae == "bob" and any(s.id == "alice" for s in far):
        return "alice"
    return far[0].id if far else sae


def write_configs(plan: NetworkPlan, pki: NetworkPki | None = None) -> NetworkPki:
    """Create the PKI (or use `pki`), link keys and every config and profile of the plan."""
    d = plan.directory
    for sub in ("modules", "nodes", "logs", "saes", "links"):
        (d / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
    pki = pki or NetworkPki(d / "pki", plan.server_names())
    pki.node_admin()
    pki.module_admin()
    for link in plan.topology.links:
        ensure_link_auth_key(d / "links" / f"{link.id}.authkey")
        new_channel_key(d / "links" / f"{link.id}.channelkey")
    for m in plan.modules.values():
        m.config.write_text(module_config_text(plan, m, pki))
    for node, hosted in plan.site_hosts().items():
        names = ", ".join(_s(m.config) for m in hosted)
        plan.site_host_files(node)[0].write_text(f"[site_host]\nmodules = [{names}]\n")
    for n in plan.nodes.values():
        n.config.write_text(node_config_text(plan, n, pki))
    for sae in plan.topology.saes:
        plan.profile(sae.id).write_text(
            profile_text(plan, pki, sae.id, default_peer(plan.topology, sae.id))
        )
    return pki


def big_network(plan: NetworkPlan) -> bool:
    """More than BIG_NETWORK_SITES sites: the caps and timers above apply."""
    return len(plan.nodes) > BIG_NETWORK_SITES


def _node_max_keys(plan: NetworkPlan) -> int:
    o = plan.options.max_key_count
    return min(o, BIG_NETWORK_MAX_KEYS) if big_network(plan) else o


def _module_max_keys(plan: NetworkPlan) -> int:
    o = plan.options.module_max_keys
    return min(o, BIG_NETWORK_MODULE_MAX_KEYS) if big_network(plan) else o
