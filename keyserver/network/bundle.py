"""Deployment bundles: one directory per site, for a network whose sites are real hosts.

``qkd-keyserver network plan --topology T --out DIR [--hosts FILE] [--install-dir PATH]``
lays the whole network out once in ``DIR/operator`` (the three CAs with their private keys, the
``network-admin`` certificates, every config: the operator's copy, which never leaves the
operator) and copies into ``DIR/<node>/`` what that site's host needs and nothing else:

    <node>/nodes/<node>.toml            its node's config
    <node>/modules/<module>.toml        its QKD modules' configs (one per link end at the site)
    <node>/links/<link>.*               the pre-shared secrets of its links (both ends hold them)
    <node>/pki/*-ca/ca.pem              the three CA certificates (no CA key)
    <node>/pki/...                      its node's, its modules' and its SAEs' certificates + keys
    <node>/saes/<sae>.toml              qphone profiles of the SAEs at the site
    <node>/start.sh                     starts its modules and its node, stops them on a signal

Every path in the configs is under ``--install-dir`` (default ``/var/lib/qkd-keyserver``): copy
``DIR/<node>/`` there on the site's host (``rsync -a DIR/beijing/ beijing:/var/lib/qkd-keyserver/``)
and run ``start.sh``. Every server certificate names its site's address from the hosts file.

**Hosts file** (``--hosts FILE``): one site per line, ``<node-id> <address>`` (an IPv4 or IPv6
address or a DNS name), ``#`` starts a comment, blank lines are skipped; every node of the
topology exactly once. Without it, site *i* (in topology order) gets the *i*-th address of
``10.200.0.0/20`` (``10.200.0.1``, ``10.200.0.2``, ...), the addresses ``--netns`` uses.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from keyserver.network.netns import SUBNET_POOL, SUBNET_PREFIXLEN
from keyserver.network.plan import NetworkPlan, Options, make_plan, write_configs
from keyserver.topology import Topology

DEFAULT_INSTALL_DIR = Path("/var/lib/qkd-keyserver")
PORT_BASE = 20_000  # each site is its own host: the same consecutive ports suit all of them
_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)


class BundleError(ValueError):
    """The hosts file or the output directory is wrong; the message says how to fix it."""


def default_hosts(topology: Topology) -> dict[str, str]:
    net = next(SUBNET_POOL.subnets(new_prefix=SUBNET_PREFIXLEN))
    hosts = net.hosts()
    return {n.id: str(next(hosts)) for n in topology.nodes}


def _address(where: str, text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        if _HOSTNAME.fullmatch(text) and not text.replace(".", "").isdigit():
            return text
    raise BundleError(f"{where}: {text!r} is neither an IP address nor a DNS name")


def parse_hosts(text: str, topology: Topology) -> dict[str, str]:
    """`<node-id> <address>` per line (``#`` comments); every node of `topology` exactly once."""
    nodes = set(topology.node_ids())
    out: dict[str, str] = {}
    for i, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        where = f"hosts file line {i}"
        if len(words) != 2:
            raise BundleError(f"{where}: write `<node-id> <address>` (got {line[:80]!r})")
        node, addr = words
        if node not in nodes:
            raise BundleError(f"{where}: {node!r} is not a node of {topology.name}")
        if node in out:
            raise BundleError(f"{where}: {node!r} is listed twice")
        out[node] = _address(where, addr)
    missing = [n for n in topology.node_ids() if n not in out]
    if missing:
        raise BundleError(
            f"the hosts file has no address for {', '.join(missing[:5])}: add a "
            "line `<node-id> <address>` for each"
        )
    return out


@dataclass(frozen=True)
class Bundle:
    node: str
    address: str
    directory: Path
    files: tuple[Path, ...]  # relative to `directory`


def site_files(plan: NetworkPlan, node: str) -> list[Path]:
    """What the host of `node` needs, relative to the network directory."""
    d = plan.directory
    pki = d / "pki"
    out = [pki / f"{dom}-ca" / "ca.pem" for dom in ("sae", "node", "module")]
    for stem in (
        pki / "sae" / f"node-{node}",
        pki / "node" / node,
        pki / "module" / f"node-{node}",
    ):
        out += [stem.with_suffix(".pem"), stem.with_suffix(".key")]
    out.append(plan.nodes[node].config)
    for m in plan.modules.values():
        if m.node == node:
            out += [m.config, pki / "module" / f"{m.id}.pem", pki / "module" / f"{m.id}.key"]
            out += sorted((d / "links").glob(f"{m.link}.*"))
    for s in plan.topology.saes:
        if s.node == node:
            out += [plan.profile(s.id), pki / "sae" / f"{s.id}.pem", pki / "sae" / f"{s.id}.key"]
    return [p.relative_to(d) for p in out]


def start_script(plan: NetworkPlan, node: str, install: Path) -> str:
    def rel(p: Path) -> str:
        return str(install / p.relative_to(plan.directory))

    lines = [
        "#!/bin/sh",
        f"# site {node} ({plan.nodes[node].host}): its QKD modules, then its KMS node.",
        "# QKD_KEYSERVER: the qkd-keyserver command (default: qkd-keyserver on the PATH).",
        'KS="${QKD_KEYSERVER:-qkd-keyserver}"',
        f'mkdir -p "{install}/logs"',
        "trap 'kill $(jobs -p) 2>/dev/null' INT TERM",
    ]
    for m in plan.modules.values():
        if m.node == node:
            lines.append(f'"$KS" module --config "{rel(m.config)}" >> "{rel(m.log)}" 2>&1 &')
    n = plan.nodes[node]
    lines += [
        f'"$KS" node --config "{rel(n.config)}" >> "{rel(n.log)}" 2>&1 &',
        f'echo "site {node}: node and modules started; logs in {install}/logs"',
        "wait",
        "",
    ]
    return "\n".join(lines)


def write_bundles(
    topology: Topology,
    out: Path,
    hosts: dict[str, str] | None = None,
    install_dir: Path = DEFAULT_INSTALL_DIR,
    options: Options | None = None,
) -> list[Bundle]:
    """The operator's copy in ``out/operator`` and one bundle per site in ``out/<node>``."""
    out = out.resolve()
    if out.exists() and any(out.iterdir()):
        raise BundleError(f"{out} is not empty: give a new --out directory")
    if not install_dir.is_absolute():
        raise BundleError(f"--install-dir {install_dir} must be an absolute path")
    where = hosts or default_hosts(topology)
    plan = make_plan(
        out / "operator", topology, options or Options(), hosts=where, port_base=PORT_BASE
    )
    write_configs(plan)
    staging = str(plan.directory)
    bundles = []
    for node in topology.node_ids():
        site = out / node
        files = site_files(plan, node)
        for rel in files:
            src, dst = plan.directory / rel, site / rel
            dst.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if src.suffix == ".toml":  # every path in it as it will be on the site's host
                dst.write_text(src.read_text().replace(f'"{staging}/', f'"{install_dir}/'))
            else:
                shutil.copy2(src, dst)
            dst.chmod(src.stat().st_mode & 0o777)
        script = site / "start.sh"
        script.write_text(start_script(plan, node, install_dir))
        script.chmod(0o755)
        bundles.append(Bundle(node, where[node], site, (*files, Path("start.sh"))))
    return bundles
