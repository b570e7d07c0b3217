"""Start a whole QKD network: every QKD module and every KMS node as its own process.

:class:`Launcher` owns one network directory (an ``flock`` on ``DIR/.lock`` for its whole life,
taken before anything is written, so a second launcher on the same directory refuses and
touches nothing), checks that every port it needs is free (naming the one that is not), writes
the PKI and configs (:mod:`keyserver.network.plan`), starts the processes (modules first),
waits until every node answers, then writes ``network.json``. Children get SIGTERM if the
launcher dies (``PR_SET_PDEATHSIG``); :meth:`stop` stops them (SIGTERM, then SIGKILL).

A network is *ready for calls* when a route between two SAEs (by default the two farthest
apart, :func:`farthest_saes`) holds key for a first relayed key: :meth:`Launcher.readiness` asks
the master SAE's node, as that SAE (ETSI GS QKD 014 ``status``: a route and
``stored_key_count >= 1``), and reads the network's link state from the same node.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keyserver.network.plan import NetworkPlan, big_network, port_free, write_configs
from keyserver.network.stateclient import KeyStatusClient, StateClient
from keyserver.network.zygote import ForkedProcess, ForkServer
from keyserver.pki.domains import NetworkPki
from keyserver.ports import HOST
from keyserver.topology import Topology


class LaunchError(Exception):
    """The network cannot start; the message says why and what to do."""


@dataclass(frozen=True)
class CallPair:
    """Two SAEs a call is made between, and how far apart their nodes are."""

    master: str
    slave: str
    master_node: str
    slave_node: str
    hops: int


ASK_PARALLEL = 16  # nodes asked at once while waiting for a network to come up
FIRST, LATER = "first", "later"  # the zygotes' gates of a staged start (start_all)
STAGE_WAIT_S = 30.0  # the later stage goes at the latest this long after the first


def _hops_from(topology: Topology, start: str) -> dict[str, int]:
    seen = {start: 0}
    todo = deque([start])
    while todo:
        u = todo.popleft()
        for v in topology.neighbours(u):
            if v not in seen:
                seen[v] = seen[u] + 1
                todo.append(v)
    return seen


def _path(topology: Topology, src: str, dst: str) -> list[str]:
    """A shortest path (in hops) from `src` to `dst`, or [] if none."""
    back: dict[str, str | None] = {src: None}
    todo = deque([src])
    while todo:
        u = todo.popleft()
        if u == dst:
            out = [u]
            while (p := back[out[-1]]) is not None:
                out.append(p)
            return out[::-1]
        for v in topology.neighbours(u):
            if v not in back:
                back[v] = u
                todo.append(v)
    return []


def farthest_saes(topology: Topology) -> CallPair | None:
    """The two SAEs whose nodes are the most hops apart (ties: file order), or None if no two
    SAEs sit at different connected nodes."""
    best: CallPair | None = None
    saes = list(topology.saes)
    for i, a in enumerate(saes):
        hops = _hops_from(topology, a.node)
        for b in saes[i + 1 :]:
            h = hops.get(b.node)
            if h is not None and h > 0 and (best is None or h > best.hops):
                best = CallPair(a.id, b.id, a.node, b.node, h)
    return best


@dataclass(frozen=True)
class Readiness:
    """How far a starting network is from carrying a call between `pair`."""

    pair: CallPair
    ready: bool
    links: int
    links_up: int
    links_keyed: int  # links whose both streams hold key, as the master's node sees them
    route: tuple[str, ...]  # the route a key would take now (empty: none yet)
    why: str  # why not ready (empty when ready)
    seconds: float  # since the launcher started


def fit(line: str, width: int) -> str:
    """`line` cut to `width` columns (an ellipsis marks the cut)."""
    return line if len(line) <= width else line[: max(0, width - 1)] + "…"


def progress_line(r: Readiness) -> str:
    p = r.pair
    state = "READY" if r.ready else r.why
    return (
        f"{r.seconds:6.1f} s  links holding key {r.links_keyed}/{r.links}, up "
        f"{r.links_up}/{r.links}; {p.master}@{p.master_node} -> {p.slave}@{p.slave_node} "
        f"({p.hops} hops): {state}"
    )


def ready_line(r: Readiness) -> str:
    p = r.pair
    return (
        f"READY FOR CALLS after {r.seconds:.1f} s: a key can be relayed from "
        f"{p.master}@{p.master_node} to {p.slave}@{p.slave_node} now "
        f"({len(r.route) - 1} hops: {' - '.join(r.route)})"
    )


def _pdeathsig() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Child:
    name: str
    kind: str  # "module" | "node"
    config: Path
    log: Path
    proc: subprocess.Popen[bytes] | ForkedProcess | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Launcher:
    def __init__(self, plan: NetworkPlan, fork_server: bool = True) -> None:
        """`fork_server`: fork the processes from one pre-imported zygote per kind
        (:mod:`keyserver.network.zygote`) instead of starting a new interpreter for each."""
        self.plan = plan
        self._zygotes: dict[str, ForkServer] | None = {} if fork_server else None
        self.children: dict[str, Child] = {
            name: Child(name, kind, cfg, log) for name, cfg, log, kind in plan.processes()
        }
        self._lock_fd: int | None = None
        self.pki: NetworkPki | None = None
        self.state: StateClient | None = None
        self.started = time.monotonic()  # the launcher's start (readiness is timed from it)
        self.call_pair = farthest_saes(plan.topology)
        self._key_status: KeyStatusClient | None = None

    # -- directory lock ------------------------------------------------------------------------
    def lock(self) -> None:
        d = self.plan.directory
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(d / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            owner = ""
            with contextlib.suppress(OSError, ValueError):
                info = json.loads((d / "network.json").read_text())
                owner = f" (launcher pid {info['launcher_pid']})"
            raise LaunchError(
                f"{d} is in use by a running network{owner}: stop it first or use another --dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- preparation ---------------------------------------------------------------------------
    def check_ports(self) -> None:
        wanted: list[tuple[int, str]] = []
        for n in self.plan.nodes.values():
            wanted += [
                (n.sae_port, f"the SAE API of node {n.id}"),
                (n.node_port, f"the node API of node {n.id}"),
            ]
        for m in self.plan.modules.values():
            wanted.append((m.port, f"the northbound API of module {m.id}"))
        for link, (q, c) in self.plan.channels.items():
            wanted += [
                (q, f"the quantum channel of link {link}"),
                (c, f"the classical channel of link {link}"),
            ]
        seen: set[int] = set()
        for port, what in wanted:
            if port in seen or not port_free(port):
                raise LaunchError(
                    f"port {port} on {HOST} is in use (needed for {what}); stop what uses it "
                    "or choose other ports"
                )
            seen.add(port)

    def prepare(self) -> NetworkPki:
        (self.plan.directory / "network.json").unlink(missing_ok=True)
        if self._zygotes is not None:  # their imports overlap with writing the PKI
            for kind in sorted({c.kind for c in self.children.values()}):
                if kind in ("node", "module"):
                    self._zygotes.setdefault(kind, ForkServer(kind)).warm()
        self.pki = write_configs(self.plan)
        self.state = StateClient(self.pki.ca_cert("node"), self.pki.node_admin())
        if big_network(self.plan):
            self.plan_route()
        return self.pki

    def route_links(self) -> set[str]:
        """The links of a shortest route between the two farthest SAEs (none without them)."""
        if self.call_pair is None:
            return set()
        nodes = set(
            _path(self.plan.topology, self.call_pair.master_node, self.call_pair.slave_node)
        )
        return {x.id for x in self.plan.topology.links if x.a in nodes and x.b in nodes}

    def plan_route(self) -> None:
        """Plan the route's links here, before any module starts (into the network's plan
        cache, keyserver/qkd/plancache.py): their first blocks gate the first relayed key, and
        in a big network their transmitters would otherwise plan among 170 others at once."""
        from keyserver.qkd.config import load_config
        from keyserver.qkd.plancache import planned
        from keyserver.qkd.role import Role

        route = self.route_links()
        for m in self.plan.modules.values():
            if m.link in route and m.role is Role.TRANSMITTER:
                cfg = load_config(m.config)
                planned(cfg.params, cfg.plan_cache)

    # -- processes -----------------------------------------------------------------------------
    def start(self, name: str) -> None:
        c = self.children[name]
        if c.running:
            return
        c.log.parent.mkdir(parents=True, exist_ok=True)
        if self._zygotes is not None:
            z = self._zygotes.get(c.kind) or self._zygotes.setdefault(c.kind, ForkServer(c.kind))
            try:
                c.proc = z.spawn([c.kind, "--config", str(c.config)], c.log)
                return
            except OSError as e:
                raise LaunchError(f"cannot start {c.kind} {name}: {e}") from None
        with c.log.open("ab") as log:
            c.proc = subprocess.Popen(
                self.command(c),
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                preexec_fn=_pdeathsig,
            )

    def command(self, c: Child) -> list[str]:
        """The command line of a child (a launcher of sites in namespaces wraps it)."""
        return [sys.executable, "-m", "keyserver.cli", c.kind, "--config", str(c.config)]

    def start_order(self) -> list[str]:
        """Nodes first (cheap: they answer within a fraction of a second and sync while the
        modules start), then the modules on a shortest route between the two farthest SAEs
        (their first QKD blocks gate the network's first relayed key), then the rest."""
        route_links = self.route_links()
        links = (self.plan.topology.link(x) for x in route_links)
        route_nodes = {n for x in links for n in (x.a, x.b)}

        def rank(name: str) -> int:
            c = self.children[name]
            if c.kind == "node":
                return 0
            m = self.plan.modules.get(name)
            if m is not None:
                return 1 if m.link in route_links else 2
            host = name.partition("@")[2]  # a site's host of its emulated modules
            return 1 if host in route_nodes else 2

        return sorted(self.children, key=rank)

    def start_all(self) -> None:
        """Start every process: each kind's children in one batch to its zygote, held at a
        gate until all are forked, then released together (so the forks are not starved by
        the children already working). In a network of more than 50 sites in two stages: the
        nodes and the modules of the farthest SAEs' route first, the other modules once every
        node answers (at most STAGE_WAIT_S later), so that the nodes start and sync without
        300 modules starting beside them (docs/network.md, "Start-up at 167 sites")."""
        order = self.start_order()
        if self._zygotes is not None:
            route = self.route_links() if big_network(self.plan) else None
            ends = [self.plan.topology.link(x) for x in route or ()]
            route_nodes = {x.a for x in ends} | {x.b for x in ends}

            def gate(name: str) -> str:
                c = self.children[name]
                if route is None or c.kind != "module":
                    return FIRST
                m = self.plan.modules.get(name)
                if m is not None:
                    return FIRST if m.link in route else LATER
                return FIRST if name.partition("@")[2] in route_nodes else LATER

            groups: dict[tuple[str, str], list[str]] = {}
            for n in order:
                c = self.children[n]
                if c.kind in ("node", "module") and not c.running:
                    groups.setdefault((c.kind, gate(n)), []).append(n)
            for (kind, g), todo in groups.items():
                for n in todo:
                    self.children[n].log.parent.mkdir(parents=True, exist_ok=True)
                z = self._zygotes.get(kind) or self._zygotes.setdefault(kind, ForkServer(kind))
                try:
                    procs = z.spawn_many(
                        [
                            ([kind, "--config", str(self.children[n].config)], self.children[n].log)
                            for n in todo
                        ],
                        hold=g,
                    )
                except OSError as e:
                    raise LaunchError(f"cannot start the {kind}s: {e}") from None
                for n, proc in zip(todo, procs, strict=True):
                    self.children[n].proc = proc
            self._release(FIRST)
            if any(g == LATER for _, g in groups):
                self._wait_nodes_answer(STAGE_WAIT_S)
                self._release(LATER)
        for name in order:
            self.start(name)  # what is left (other kinds), in order

    def _release(self, gate: str) -> None:
        for z in (self._zygotes or {}).values():
            try:
                z.release(gate)
            except OSError as e:
                raise LaunchError(f"cannot start the {z.kind}s: {e}") from None

    def _wait_nodes_answer(self, timeout: float) -> None:
        """Until every node answers a state request, a child exits, or `timeout` passes."""
        if self.state is None:
            return
        state = self.state
        deadline = time.monotonic() + timeout
        ask = list(self.plan.nodes)
        with ThreadPoolExecutor(max_workers=min(ASK_PARALLEL, len(ask) or 1)) as pool:
            while ask and time.monotonic() < deadline and not self.exited():
                got = list(pool.map(lambda n: state.get(self.plan.nodes[n].node_url), ask))
                ask = [n for n, st in zip(ask, got, strict=True) if st is None]
                if ask:
                    time.sleep(0.5)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        c = self.children[name]
        if c.proc is not None and c.proc.poll() is None:
            c.proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                c.proc.wait(timeout=10)

    def zygote_pids(self) -> dict[str, int]:
        """The fork servers' pids by kind (their memory is shared with their children)."""
        return {k: z.pid for k, z in (self._zygotes or {}).items() if z.pid is not None}

    def exited(self) -> list[Child]:
        return [
            c for c in self.children.values() if c.proc is not None and c.proc.poll() is not None
        ]

    def stop(self) -> None:
        for c in self.children.values():
            if c.running and c.proc is not None:
                c.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for c in self.children.values():
            if c.proc is None:
                continue
            try:
                c.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                c.proc.kill()
                c.proc.wait()
        for z in (self._zygotes or {}).values():
            z.close()
        if self._zygotes:
            self._zygotes = {}

    def wait_ready(
        self,
        timeout: float = 90.0,
        stop: Callable[[], bool] = lambda: False,
        progress: Callable[[str], None] = lambda s: None,
        synced: bool = True,
        first_key: bool = False,
    ) -> None:
        """Every node answers (and, with `synced`, every link's two nodes agree on its keys;
        with `first_key`, every link also holds key for both directions or has aborted a block,
        e.g. for an eavesdropper: then its alarm is what a caller gets)."""
        assert self.state is not None
        state = self.state
        deadline = time.monotonic() + timeout
        waiting = "nodes"
        states: dict[str, dict[str, Any] | None] = {n: None for n in self.plan.nodes}
        done: set[str] = set()  # nodes whose state can no longer hold us back: not asked again
        while True:
            dead = self.exited()
            if dead:
                c = dead[0]
                code = c.proc.returncode if c.proc else None
                raise LaunchError(
                    f"{c.kind} {c.name} exited with code {code}: see {c.log}" + _last_line(c.log)
                )
            ask = [n for n in self.plan.nodes if n not in done]
            if ask:  # in parallel: one by one, 167 starting nodes took minutes to ask
                with ThreadPoolExecutor(max_workers=min(ASK_PARALLEL, len(ask))) as pool:
                    got = pool.map(lambda n: state.get(self.plan.nodes[n].node_url), ask)
                    states.update(zip(ask, got, strict=True))
            missing = [n for n, s in states.items() if s is None]
            unsynced = sorted(
                {
                    lid
                    for s in states.values()
                    if s is not None
                    for lid, link in s["links"].items()
                    if not link["synced"]
                }
            )
            keyless = (
                sorted(
                    {
                        lid
                        for s in states.values()
                        if s is not None
                        for lid, link in s["links"].items()
                        if min(link["stock_bits"].values()) <= 0 and not _aborted(link)
                    }
                )
                if first_key
                else []
            )
            for n, st in states.items():
                if st is not None and all(
                    (link["synced"] or not synced)
                    and (not first_key or min(link["stock_bits"].values()) > 0 or _aborted(link))
                    for link in st["links"].values()
                ):
                    done.add(n)
            if not missing and (not synced or not unsynced) and not keyless:
                return
            now_waiting = (
                f"waiting for node(s) {', '.join(missing[:5])}"
                if missing
                else f"waiting for link(s) {', '.join(unsynced[:5])} to sync"
                if unsynced
                else f"waiting for the first QKD key on link(s) {', '.join(keyless[:5])}"
            )
            if now_waiting != waiting:
                waiting = now_waiting
                progress(waiting)
            if time.monotonic() > deadline:
                raise LaunchError(
                    f"the network did not come up in {timeout:g} s: {waiting}; "
                    f"see the logs in {self.plan.directory / 'logs'}"
                )
            if stop():
                raise LaunchError("interrupted")
            time.sleep(0.5)

    def readiness(self, pair: CallPair | None = None) -> Readiness | None:
        """Can `pair` (default: the two farthest SAEs) be given a relayed key now? None if the
        topology has no two SAEs at different nodes."""
        pair = pair or self.call_pair
        if pair is None or self.pki is None or self.state is None:
            return None
        if self._key_status is None:
            self._key_status = KeyStatusClient(self.pki.ca_cert("sae"), self.pki.sae(pair.master))
        node = self.plan.nodes[pair.master_node]
        st = self._key_status.status(node.sae_url, pair.slave)
        view = self.state.get(node.node_url)
        links = len(self.plan.topology.links)
        up = keyed = 0
        for v in (view or {}).get("network", []):
            up += bool(v.get("up"))
            keyed += bool(v.get("stock_bits")) and min(v["stock_bits"].values()) > 0
        route: tuple[str, ...] = ()
        why = f"node {pair.master_node} does not answer"
        if st is not None:
            ext = st.get("status_extension") or {}
            r = ext.get("route")
            if r is None:
                why = "no route with key yet: " + str(ext.get("no_route") or "links starting")
            elif int(st.get("stored_key_count") or 0) < 1:
                why = f"route of {r.get('hops')} hops found, waiting for key on all of it"
            else:
                route, why = tuple(str(x) for x in r.get("nodes", ())), ""
        return Readiness(
            pair, not why, links, up, keyed, route, why, time.monotonic() - self.started
        )

    def wait_call_ready(
        self,
        timeout: float,
        stop: Callable[[], bool] = lambda: False,
        progress: Callable[[Readiness], None] = lambda r: None,
        interval: float = 1.0,
    ) -> Readiness | None:
        """Until :meth:`readiness` says ready (None: no SAE pair to wait for)."""
        deadline = time.monotonic() + timeout
        while True:
            r = self.readiness()
            if r is None or r.ready:
                return r
            progress(r)
            dead = self.exited()
            if dead:
                c = dead[0]
                raise LaunchError(f"{c.kind} {c.name} exited: see {c.log}" + _last_line(c.log))
            if time.monotonic() > deadline:
                raise LaunchError(
                    f"no key between {r.pair.master} and {r.pair.slave} after "
                    f"{timeout:g} s: {r.why}"
                )
            if stop():
                raise LaunchError("interrupted")
            time.sleep(interval)

    # -- outputs -------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        p, pki = self.plan, self.pki
        assert pki is not None
        admin = pki.node_admin()
        madmin = pki.module_admin()
        return {
            "topology": p.topology.name,
            "directory": str(p.directory),
            "launcher_pid": os.getpid(),
            "ca_cert": str(pki.ca_cert("sae")),
            "node_ca_cert": str(pki.ca_cert("node")),
            "module_ca_cert": str(pki.ca_cert("module")),
            "admin": {
                "node_cert": str(admin.cert),
                "node_key": str(admin.key),
                "module_cert": str(madmin.cert),
                "module_key": str(madmin.key),
            },
            "nodes": {
                n.id: {
                    "sae_url": n.sae_url,
                    "node_url": n.node_url,
                    "config": str(n.config),
                    "log": str(n.log),
                    "pid": self._pid(n.id),
                    "city": next(x.city for x in p.topology.nodes if x.id == n.id),
                }
                for n in p.nodes.values()
            },
            "modules": {
                m.id: {
                    "link": m.link,
                    "role": m.role,
                    "node": m.node,
                    "url": m.url,
                    "config": str(m.config),
                    "log": str(m.log),
                    "pid": self._pid(m.id),
                }
                for m in p.modules.values()
            },
            "links": {
                link.id: {
                    "a": link.a,
                    "b": link.b,
                    "distance_km": link.distance_km,
                    "modules": [m.id for m in p.modules_of(link.id)],
                    "eve_module": p.eve_module(link.id).id,
                }
                for link in p.topology.links
            },
            "saes": {
                s.id: {
                    "id": s.id,
                    "node": s.node,
                    "kme": s.node,
                    "kme_url": p.nodes[s.node].sae_url,
                    "cert": str(pki.sae(s.id).cert),
                    "key": str(pki.sae(s.id).key),
                    "ca_cert": str(pki.ca_cert("sae")),
                    "profile": str(p.profile(s.id)),
                }
                for s in p.topology.saes
            },
        }

    def _pid(self, name: str) -> int | None:
        c = self.children[self.plan.process_of(name)]
        return c.proc.pid if c.proc is not None else None

    def write_info(self, name: str = "network.json", extra: dict[str, Any] | None = None) -> Path:
        info = self.info()
        info.update(extra or {})
        path = self.plan.directory / name
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=2) + "\n")
        os.replace(tmp, path)
        return path


def _last_line(log: Path) -> str:
    with contextlib.suppress(OSError):
        lines = [x for x in log.read_text(errors="replace").splitlines() if x.strip()]
        if lines:
            return f" (last line: {lines[-1][:300]})"
    return ""


def _aborted(link_state: dict[str, Any]) -> bool:
    """The link's module reports an aborted block or an eavesdropper alarm."""
    module = link_state.get("module") or {}
    return bool(module.get("eavesdropper_alarm")) or int(module.get("blocks_aborted") or 0) > 0
