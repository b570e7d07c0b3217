"""Start a network with every site in its own network namespace (``network --netns``).

:func:`netns_launcher` checks the right to make namespaces (one line naming the fix when it is
missing), probes the kernel for ``tc netem``, picks a free subnet and lays the network out
(:mod:`keyserver.network.netns`); :class:`NetnsLauncher` is the :class:`Launcher` that makes the
namespaces before anything starts, starts each process in its site's namespace
(``ip netns exec``), runs the delay lines when netem is missing, and removes every namespace
and veth when it stops (Ctrl-C, SIGTERM, a failure), also those a killed launcher left behind
on the same directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from keyserver.network.launcher import Child, Launcher, LaunchError
from keyserver.network.linkdelay import dump_forwards
from keyserver.network.netns import (
    DelayMethod,
    Forward,
    NetnsError,
    NetnsLayout,
    batches,
    choose_subnet,
    forwards,
    line_commands,
    missing_capabilities,
    netem_commands,
    plan_layout,
    prefix_for,
    setup_commands,
    teardown_commands,
)
from keyserver.network.plan import NetworkPlan, Options, make_plan
from keyserver.pki.domains import NetworkPki
from keyserver.qkd.role import Role
from keyserver.topology import Topology

PORT_BASE = 20_000  # ports inside the namespaces: every one is free there
DELAY_CHILD = "delay-lines"


def _pdeathsig() -> None:  # in the child between fork and exec: SIGTERM when the launcher dies
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _run(
    cmd: list[str], check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, input=stdin)
    if check and r.returncode != 0:
        raise NetnsError(f"`{' '.join(cmd)}` failed: {r.stderr.strip() or r.returncode}")
    return r


def check_rights() -> None:
    """Raise NetnsError (one line, naming the fix) unless this process may make namespaces."""
    if shutil.which("ip") is None or shutil.which("tc") is None:
        raise NetnsError("--netns needs iproute2 (`ip`, `tc`): apt-get install iproute2")
    cap = "0"
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                cap = line.split()[1]
    missing = missing_capabilities(cap)
    if missing:
        raise NetnsError(
            f"--netns makes network namespaces, which needs {' and '.join(missing)}"
            ": run it as root (sudo), or leave out --netns"
        )


def netem_available(prefix: str) -> bool:
    """Whether the kernel has the netem qdisc (tried on a veth in a scratch namespace)."""
    ns = f"{prefix}-probe"
    _run(["ip", "netns", "del", ns], check=False)
    _run(["ip", "netns", "add", ns])
    try:
        _run(["ip", "-n", ns, "link", "add", "d0", "type", "veth", "peer", "name", "d1"])
        r = _run(
            ["tc", "-n", ns, "qdisc", "add", "dev", "d0", "root", "netem", "delay", "1ms"],
            check=False,
        )
        return r.returncode == 0
    finally:
        _run(["ip", "netns", "del", ns], check=False)


def subnets_in_use() -> list[ipaddress.IPv4Network]:
    out = []
    for cmd in (["ip", "-4", "-o", "addr", "show"], ["ip", "-4", "route", "show"]):
        for word in _run(cmd).stdout.split():
            with contextlib.suppress(ValueError):
                if "/" in word:
                    out.append(ipaddress.IPv4Network(word, strict=False))
    return out


def remove(layout: NetnsLayout) -> None:
    """Remove the namespaces and veths of `layout` (each may already be gone)."""
    for cmd in teardown_commands(layout):
        _run(cmd, check=False)
    listed = _run(["ip", "netns", "list"], check=False).stdout.split()
    for name in listed:  # a namespace a killed launcher made (its sites may have changed)
        if name.startswith(f"{layout.prefix}-"):
            _run(["ip", "netns", "del", name], check=False)


class NetnsLauncher(Launcher):
    def __init__(self, plan: NetworkPlan, layout: NetnsLayout, lines: list[Forward]) -> None:
        # every process a new one in its site's namespace: no fork server (its children
        # would be born in the root namespace)
        super().__init__(plan, fork_server=False)
        self.layout = layout
        self.lines = lines
        self._made = False
        # receivers (which listen on both channels) before transmitters (which dial them): a
        # transmitter's line accepts at once even while the far end is not up yet
        rank = {Role.RECEIVER: 0, Role.TRANSMITTER: 1}
        self.children = dict(
            sorted(
                self.children.items(),
                key=lambda kv: (
                    kv[1].kind != "module",
                    rank[plan.modules[kv[0]].role] if kv[0] in plan.modules else 0,
                ),
            )
        )
        if lines:  # the delay lines first, so the first connections already see the fibre
            d = plan.directory
            self.children = {
                DELAY_CHILD: Child(
                    DELAY_CHILD, "delay", d / "netns" / "lines.json", d / "logs" / "delay-lines.log"
                ),
                **self.children,
            }

    def check_ports(self) -> None:
        """Nothing to check: every port is free in namespaces this launcher makes."""

    def prepare(self) -> NetworkPki:
        remove(self.layout)  # what a killed launcher on this directory left behind
        self._made = True
        try:
            topo = self.plan.topology
            for argv, lines in batches(
                [
                    *setup_commands(self.layout),
                    *line_commands(self.layout, topo),
                    *netem_commands(self.layout, topo, self._distances()),
                ]
            ):
                _run(argv, stdin="".join(f"{x}\n" for x in lines) if lines else None)
        except NetnsError as e:
            raise LaunchError(str(e)) from None
        if self.lines:
            (self.plan.directory / "netns").mkdir(parents=True, exist_ok=True, mode=0o700)
            dump_forwards(self.lines, self.children[DELAY_CHILD].config)
        return super().prepare()

    def _distances(self) -> dict[str, float]:
        o = self.plan.options.distance_km
        return {x.id: x.distance_km if o is None else float(o) for x in self.plan.topology.links}

    def command(self, c: Child) -> list[str]:
        if c.kind == "delay":  # in the root namespace: it makes its sockets in each site's
            return [sys.executable, "-m", "keyserver.network.linkdelay", str(c.config)]
        node = self.plan.modules[c.name].node if c.kind == "module" else c.name
        return self.layout.exec_prefix(node) + super().command(c)

    def start(self, name: str) -> None:
        """A new process in its site's namespace (``ip netns exec``): never one forked from a
        zygote of the root namespace."""
        c = self.children[name]
        if c.running:
            return
        c.log.parent.mkdir(parents=True, exist_ok=True)
        with c.log.open("ab") as log:
            c.proc = subprocess.Popen(
                self.command(c),
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                preexec_fn=_pdeathsig,
            )

    def start_all(self) -> None:
        super().start_all()
        if DELAY_CHILD in self.children:
            self._wait_lines()

    def _wait_lines(self, timeout: float = 30.0) -> None:
        c = self.children[DELAY_CHILD]
        deadline = time.monotonic() + timeout
        while b"delay_lines_ready" not in c.log.read_bytes():
            if not c.running or time.monotonic() > deadline:
                raise LaunchError(f"the delay lines did not start: see {c.log}")
            time.sleep(0.05)

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            if self._made:
                remove(self.layout)
                self._made = False

    def info(self) -> dict[str, Any]:
        out = super().info()
        out["netns"] = netns_info(self.layout, len(self.lines))
        return out


def netns_info(layout: NetnsLayout, lines: int) -> dict[str, Any]:
    how = (
        "tc netem on each site's interface"
        if layout.method is DelayMethod.NETEM
        else "the launcher's delay lines (this kernel has no tc netem)"
    )
    return {
        "prefix": layout.prefix,
        "subnet": str(layout.subnet),
        "hub": layout.hub_ns,
        "root_address": layout.root_address,
        "delay": layout.method.value,
        "delay_how": how,
        "delay_lines": lines,
        "loss": layout.loss,
        "sites": {n: {"ns": s.ns, "address": s.address} for n, s in layout.sites.items()},
    }


def netns_launcher(
    directory: Path, topology: Topology, options: Options, loss: float = 0.0
) -> NetnsLauncher:
    """Check the rights, probe for netem, choose the subnet and lay the network out."""
    check_rights()
    prefix = prefix_for(directory)
    method = DelayMethod.NETEM if netem_available(prefix) else DelayMethod.FORWARDER
    layout = plan_layout(topology, prefix, choose_subnet(subnets_in_use()), method, loss)
    plan = make_plan(directory, topology, options, hosts=layout.hosts(), port_base=PORT_BASE)
    o = options.distance_km
    km = {x.id: x.distance_km if o is None else float(o) for x in topology.links}
    lines = forwards(
        layout, topology, {n: p.node_port for n, p in plan.nodes.items()}, plan.channels, km
    )
    return NetnsLauncher(plan, layout, lines)


def describe(info: dict[str, Any]) -> str:
    """One line for the banner and the status: where the sites are and how the fibre is made."""
    n = info["netns"]
    loss = f", loss {n['loss']:g} per packet" if n["loss"] else ""
    return (
        f"sites in namespaces {n['prefix']}-<node> on {n['subnet']}; fibre delay 4.9 us/km "
        f"by {n['delay_how']}{loss}"
    )
