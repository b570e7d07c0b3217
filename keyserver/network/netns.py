"""Sites in their own Linux network namespaces: the plan (sans-I/O).

``qkd-keyserver network --netns`` gives every site (its KMS node, its QKD modules, its SAEs'
terminals) its own network namespace and address, and joins them like this::

    [ns P-beijing] eth0 10.200.0.1 --veth-- s0 \\
    [ns P-langfang] eth0 10.200.0.2 --veth-- s1 -- br0 (bridge in ns P-hub) -- P (root ns,
    ...                                          /                             10.200.15.254)
    [ns P-hefei] eth0 10.200.0.20 --veth-- s19 /

A **central bridge** rather than one veth pair per fibre: a star costs one veth pair per site
and no routes, while point-to-point links would need an IP route to every other site in every
namespace (nodes send acknowledgements straight to a relay's initiator, whatever the distance:
167 x 166 routes at hefei-metro-full). The fibre is applied where the topology has one:

* with ``tc netem`` (when the kernel has it): on each site's ``eth0``, an HTB class per fibre
  neighbour with a netem child (the link's delay and loss), chosen by destination address;
* without it (this machine's kernel): a **delay line** (:mod:`keyserver.network.linkdelay`) in
  the dialling site holds every byte for the fibre's delay before sending it on to the far
  site, for everything that crosses the fibre: the link's two QKD channels (the transmitter
  dials) and node-to-node calls between the link's two nodes (each way). It is transparent:
  every process dials the far site's own address. In the dialling site's namespace each fibre
  neighbour's address is also a local address (on ``lo``; ``arp_ignore`` keeps the site from
  answering for it on the bridge), where the line listens; packets from the site's own
  address to a neighbour's (the line's own connection, which it makes from there, and the
  site's answers to the neighbour's lines) are routed, by a rule ahead of the local table, out
  of ``eth0``. Loss on a TCP stream is what TCP makes of it, a retransmission: each chunk
  is held one more minimum retransmission timeout (200 ms, Linux's TCP_RTO_MIN) with the loss
  probability.

Messages between nodes that share no fibre (a relay's acknowledgement to its initiator, a void)
cross the bridge without added delay in both cases. Namespaces are named ``<prefix>-<node>``,
``<prefix>-hub``; the prefix is derived from the network directory, so parallel networks do
not clash (each network's addresses live in its own namespaces; only the root namespace's
veth needs a subnet not in use, :func:`choose_subnet`).
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from keyserver.topology import Topology

# light in standard single-mode fibre: group index 1.4682 at 1550 nm (Corning SMF-28 ULL
# product information sheet): 1.4682 / 299 792.458 km/s = 4.897 us per km
DELAY_S_PER_KM = 4.9e-6
TCP_RTO_MIN_S = 0.2  # Linux TCP_RTO_MIN (include/net/tcp.h): a lost segment's resend delay
SUBNET_POOL = ipaddress.IPv4Network("10.200.0.0/16")
SUBNET_PREFIXLEN = 20  # 4094 addresses per network, 16 networks in the pool
HUB_BRIDGE = "br0"
LINE_TABLE = 51  # routing table of packets from a site to a fibre neighbour: out of eth0
SITE_IF = "eth0"
CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21


class NetnsError(Exception):
    """Namespaces cannot be planned or made; the message says why and what to do."""


class DelayMethod(enum.Enum):
    NETEM = "netem"  # the kernel delays (and drops) packets on each site's interface
    FORWARDER = "forwarder"  # the launcher's delay line holds bytes for the fibre's delay


@dataclass(frozen=True)
class Site:
    node: str
    ns: str
    address: str
    hub_if: str  # its veth's end in the hub namespace


@dataclass(frozen=True)
class Forward:
    """A delay line: listen at `listen` in namespace `ns`, send on to `target` from there."""

    link: str
    what: str
    ns: str
    listen: tuple[str, int]
    target: tuple[str, int]
    delay_s: float
    loss: float
    source: str = ""  # the dialling site's address (its connection leaves from there)


@dataclass(frozen=True)
class NetnsLayout:
    prefix: str
    subnet: ipaddress.IPv4Network
    hub_ns: str
    root_if: str  # the root namespace's veth into the hub (the launcher and `status` use it)
    root_address: str
    sites: dict[str, Site]
    method: DelayMethod
    loss: float

    def ns(self, node: str) -> str:
        return self.sites[node].ns

    def hosts(self) -> dict[str, str]:
        return {n: s.address for n, s in self.sites.items()}

    def namespaces(self) -> list[str]:
        return [s.ns for s in self.sites.values()] + [self.hub_ns]

    def exec_prefix(self, node: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns(node)]


def prefix_for(directory: Path) -> str:
    """A short, stable prefix per network directory (names: ``<prefix>-<node>``, and the root
    namespace's veth, whose name must stay within 15 characters)."""
    return "qk" + hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:6]


def fibre_delay_s(distance_km: float) -> float:
    return distance_km * DELAY_S_PER_KM


def choose_subnet(in_use: Iterable[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
    """The first /20 of 10.200.0.0/16 that overlaps no network already on the root namespace."""
    used = list(in_use)
    for net in SUBNET_POOL.subnets(new_prefix=SUBNET_PREFIXLEN):
        if not any(net.overlaps(u) for u in used):
            return net
    raise NetnsError(
        f"every /{SUBNET_PREFIXLEN} of {SUBNET_POOL} is in use on this host: stop "
        "other --netns networks or give --netns-subnet"
    )


def plan_layout(
    topology: Topology,
    prefix: str,
    subnet: ipaddress.IPv4Network,
    method: DelayMethod,
    loss: float = 0.0,
) -> NetnsLayout:
    hosts = list(subnet.hosts())
    if len(hosts) < len(topology.nodes) + 1:
        raise NetnsError(
            f"subnet {subnet} has {len(hosts)} addresses; {topology.name} needs "
            f"{len(topology.nodes) + 1}: give a larger one"
        )
    if not 0.0 <= loss < 1.0:
        raise NetnsError("--loss must be at least 0 and below 1 (a probability per packet)")
    sites = {
        n.id: Site(n.id, f"{prefix}-{n.id}", str(hosts[i]), f"s{i}")
        for i, n in enumerate(topology.nodes)
    }
    return NetnsLayout(prefix, subnet, f"{prefix}-hub", prefix, str(hosts[-1]), sites, method, loss)


def forwards(
    layout: NetnsLayout,
    topology: Topology,
    node_ports: dict[str, int],
    channels: dict[str, tuple[int, int]],
    distance_km: dict[str, float],
) -> list[Forward]:
    """The delay lines of every fibre (none with netem): the two QKD channels of each link in
    its transmitter's site, and each node's calls to its fibre neighbours in its own site, each
    listening on the far end's address (a local address in the dialling site)."""
    if layout.method is DelayMethod.NETEM:
        return []
    out: list[Forward] = []
    for link in topology.links:
        d = fibre_delay_s(distance_km[link.id])
        a, b = layout.sites[link.a], layout.sites[link.b]
        for port, what in zip(channels[link.id], ("quantum", "classical"), strict=True):
            out.append(
                Forward(
                    link.id,
                    what,
                    a.ns,
                    (b.address, port),
                    (b.address, port),
                    d,
                    layout.loss,
                    a.address,
                )
            )
        for src, dst in ((a, b), (b, a)):
            port = node_ports[dst.node]
            out.append(
                Forward(
                    link.id,
                    f"node {src.node}->{dst.node}",
                    src.ns,
                    (dst.address, port),
                    (dst.address, port),
                    d,
                    layout.loss,
                    src.address,
                )
            )
    return out


def setup_commands(layout: NetnsLayout) -> list[list[str]]:
    """`ip` commands that make the namespaces, the bridge and every site's veth, in phases (all
    namespaces, all veths, the hub, each site) so that :func:`batches` joins most of them."""
    plen = layout.subnet.prefixlen
    hub = layout.hub_ns
    sites = list(layout.sites.values())
    cmds = [["ip", "netns", "add", ns] for ns in [hub, *(x.ns for x in sites)]]
    cmds += [
        [
            "ip",
            "link",
            "add",
            SITE_IF,
            "netns",
            x.ns,
            "type",
            "veth",
            "peer",
            "name",
            x.hub_if,
            "netns",
            hub,
        ]
        for x in sites
    ]
    cmds += [
        ["ip", "link", "add", layout.root_if, "type", "veth", "peer", "name", "root", "netns", hub],
        ["ip", "addr", "add", f"{layout.root_address}/{plen}", "dev", layout.root_if],
        ["ip", "link", "set", layout.root_if, "up"],
        ["ip", "-n", hub, "link", "set", "lo", "up"],
        ["ip", "-n", hub, "link", "add", HUB_BRIDGE, "type", "bridge"],
        ["ip", "-n", hub, "link", "set", HUB_BRIDGE, "up"],
        ["ip", "-n", hub, "link", "set", "root", "master", HUB_BRIDGE, "up"],
    ]
    cmds += [["ip", "-n", hub, "link", "set", x.hub_if, "master", HUB_BRIDGE, "up"] for x in sites]
    for x in sites:
        cmds += [
            ["ip", "-n", x.ns, "link", "set", "lo", "up"],
            ["ip", "-n", x.ns, "addr", "add", f"{x.address}/{plen}", "dev", SITE_IF],
            ["ip", "-n", x.ns, "link", "set", SITE_IF, "up"],
        ]
    return cmds


def batches(cmds: list[list[str]]) -> list[tuple[list[str], list[str]]]:
    """(argv, stdin lines) that run `cmds` in order: consecutive ``ip`` commands for the same
    namespace become one ``ip [-n NS] -batch -`` (one process instead of one per command: 2,362
    commands at hefei-metro-full's 167 sites); anything else runs as it is."""
    out: list[tuple[list[str], list[str]]] = []
    for cmd in cmds:
        if cmd[0] != "ip" or cmd[1:3] == ["netns", "exec"]:
            out.append((cmd, []))
            continue
        head = cmd[:3] if cmd[1] == "-n" else cmd[:1]
        line = " ".join(cmd[len(head) :])
        last = out[-1] if out else None
        if last is not None and last[1] and last[0] == [*head, "-batch", "-"]:
            last[1].append(line)
        else:
            out.append(([*head, "-batch", "-"], [line]))
    return out


def line_commands(layout: NetnsLayout, topology: Topology) -> list[list[str]]:
    """With delay lines: in each site, its fibre neighbours' addresses on ``lo`` (where the lines
    listen), and what goes from the site's address to theirs routed out of ``eth0``."""
    if layout.method is not DelayMethod.FORWARDER:
        return []
    cmds: list[list[str]] = []
    for node, s in layout.sites.items():
        ip = ["ip", "-n", s.ns]
        sysctl = ["ip", "netns", "exec", s.ns, "sysctl", "-qw"]
        cmds += [
            # answer ARP only for eth0's own address; accept replies from a far end whose
            # address is also local here; no reverse-path filter on them
            [
                *sysctl,
                "net.ipv4.conf.all.arp_ignore=1",
                f"net.ipv4.conf.{SITE_IF}.arp_ignore=1",
                "net.ipv4.conf.all.accept_local=1",
                f"net.ipv4.conf.{SITE_IF}.accept_local=1",
                "net.ipv4.conf.all.rp_filter=0",
                f"net.ipv4.conf.{SITE_IF}.rp_filter=0",
            ],
            [*ip, "rule", "add", "pref", "100", "lookup", "local"],
            [*ip, "rule", "del", "pref", "0", "lookup", "local"],
            [
                *ip,
                "route",
                "add",
                str(layout.subnet),
                "dev",
                SITE_IF,
                "src",
                s.address,
                "table",
                str(LINE_TABLE),
            ],
        ]
        for other in topology.neighbours(node):
            far = layout.sites[other].address
            cmds += [
                [*ip, "addr", "add", f"{far}/32", "dev", "lo"],
                [
                    *ip,
                    "rule",
                    "add",
                    "pref",
                    "50",
                    "from",
                    s.address,
                    "to",
                    far,
                    "lookup",
                    str(LINE_TABLE),
                ],
            ]
    return cmds


def netem_commands(
    layout: NetnsLayout, topology: Topology, distance_km: dict[str, float]
) -> list[list[str]]:
    """With netem: on each site's eth0 an HTB root (unclassified traffic: class 1:1, no delay)
    and per fibre neighbour a class with a netem child, selected by destination address."""
    if layout.method is not DelayMethod.NETEM:
        return []
    cmds: list[list[str]] = []
    classes: dict[str, int] = {}
    for node, site in layout.sites.items():
        tc = ["tc", "-n", site.ns]
        cmds += [
            [*tc, "qdisc", "add", "dev", SITE_IF, "root", "handle", "1:", "htb", "default", "1"],
            [
                *tc,
                "class",
                "add",
                "dev",
                SITE_IF,
                "parent",
                "1:",
                "classid",
                "1:1",
                "htb",
                "rate",
                "10gbit",
            ],
        ]
        classes[node] = 1
    for link in topology.links:
        d_us = max(1, round(fibre_delay_s(distance_km[link.id]) * 1e6))
        for src, dst in ((link.a, link.b), (link.b, link.a)):
            s = layout.sites[src]
            classes[src] += 1
            k = classes[src]
            tc = ["tc", "-n", s.ns]
            netem = ["netem", "delay", f"{d_us}us"]
            if layout.loss > 0:
                netem += ["loss", f"{layout.loss * 100:g}%"]
            cmds += [
                [
                    *tc,
                    "class",
                    "add",
                    "dev",
                    SITE_IF,
                    "parent",
                    "1:",
                    "classid",
                    f"1:{k:x}",
                    "htb",
                    "rate",
                    "10gbit",
                ],
                [
                    *tc,
                    "qdisc",
                    "add",
                    "dev",
                    SITE_IF,
                    "parent",
                    f"1:{k:x}",
                    "handle",
                    f"{k:x}:",
                    *netem,
                ],
                [
                    *tc,
                    "filter",
                    "add",
                    "dev",
                    SITE_IF,
                    "parent",
                    "1:",
                    "protocol",
                    "ip",
                    "prio",
                    "1",
                    "u32",
                    "match",
                    "ip",
                    "dst",
                    f"{layout.sites[dst].address}/32",
                    "flowid",
                    f"1:{k:x}",
                ],
            ]
    return cmds


def teardown_commands(layout: NetnsLayout) -> list[list[str]]:
    """Remove everything (a namespace takes its veth ends with it; each may already be gone)."""
    return [["ip", "link", "del", layout.root_if]] + [
        ["ip", "netns", "del", ns] for ns in layout.namespaces()
    ]


def missing_capabilities(cap_eff_hex: str) -> list[str]:
    """The capabilities, of those namespaces need, that a ``CapEff`` mask lacks."""
    mask = int(cap_eff_hex, 16)
    need = {"CAP_NET_ADMIN": CAP_NET_ADMIN, "CAP_SYS_ADMIN": CAP_SYS_ADMIN}
    return [name for name, bit in need.items() if not mask >> bit & 1]
