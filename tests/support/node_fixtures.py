"""In-process KMS networks for fast tests: real nodes, real HTTPS on loopback, in-memory links.

:class:`MemoryLink` is a test double of a QKD module pair's *northbound* side only (the node's
:class:`keyserver.kms.moduleclient.ModuleApi`): both ends serve the same deterministic keys
under the same IDs, and a test can raise the eavesdropper alarm or cut the link. The real QKD
modules (``qkd-keyserver module``) are used by the process-level tests.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from keyserver.etsi014.key import Key
from keyserver.kms.moduleclient import ModuleRefused, ModuleStatus, ModuleUnavailable
from keyserver.kms.node import KmsNode
from keyserver.kms.nodeconfig import Timers, load_node_config
from keyserver.network.plan import NetworkPlan, Options, make_plan, write_configs
from keyserver.pki.domains import NetworkPki
from keyserver.pki.tls import client_context
from keyserver.topology import Topology, parse_topology


class MemoryLink:
    """Both ends of one link: every status poll 'produces' `keys_per_poll` more keys."""

    def __init__(
        self, seed: int, key_bits: int = 1024, keys_per_poll: int = 64, max_keys: int = 4096
    ) -> None:
        self._rng = random.Random(seed)
        self.key_bits = key_bits
        self.keys_per_poll = keys_per_poll
        self.max_keys = max_keys
        self.tx: OrderedDict[uuid.UUID, bytes] = OrderedDict()
        self.rx: dict[uuid.UUID, bytes] = {}
        self.alarm = False
        self.down = False
        self.rate_bps = 1e5  # the key rate its status reports
        self.blocks_ok = 0
        self.blocks_aborted = 0
        self.budget: int | None = None  # keys it will still produce (None: no limit)

    def produce(self) -> None:
        if self.alarm:
            self.blocks_aborted += 1
            return
        n = min(self.keys_per_poll, self.max_keys - len(self.tx))
        if self.budget is not None:
            n = min(n, self.budget)
            self.budget -= n
        for _ in range(n):
            kid = uuid.UUID(int=self._rng.getrandbits(128), version=4)
            mat = self._rng.randbytes(self.key_bits // 8)
            self.tx[kid] = mat
            self.rx[kid] = mat
        self.blocks_ok += 1

    def end(self, transmitter: bool) -> MemoryModule:
        return MemoryModule(self, transmitter)


class MemoryModule:
    def __init__(self, link: MemoryLink, transmitter: bool) -> None:
        self.link = link
        self.transmitter = transmitter

    def _check(self) -> None:
        if self.link.down:
            raise ModuleUnavailable("memory module: fibre cut")

    async def status(self, after: int | None = None, wait: float = 0.0) -> ModuleStatus:
        self._check()
        if self.transmitter:
            self.link.produce()
        ln = self.link
        return ModuleStatus(
            ln.key_bits,
            len(ln.tx) if self.transmitter else len(ln.rx),
            1024,
            {
                "state": "aborted" if ln.alarm else "running",
                "eavesdropper_alarm": ln.alarm,
                "key_rate_bps": 0.0 if ln.alarm else ln.rate_bps,
                "qber": 0.25 if ln.alarm else 0.02,
                "blocks_ok": ln.blocks_ok,
                "blocks_aborted": ln.blocks_aborted,
            },
        )

    async def enc_keys(self, number: int, size_bits: int) -> list[Key]:
        self._check()
        if not self.transmitter or size_bits != self.link.key_bits:
            raise ModuleRefused(400, "wrong side or size")
        if len(self.link.tx) < number:
            raise ModuleUnavailable("not enough keys")
        return [Key.of(*self.link.tx.popitem(last=False)) for _ in range(number)]

    async def dec_keys(self, key_ids: Sequence[uuid.UUID], size_bits: int) -> list[Key]:
        self._check()
        if self.transmitter or any(k not in self.link.rx for k in key_ids):
            raise ModuleRefused(400, "one or more keys specified are not found on KME")
        return [Key.of(k, self.link.rx.pop(k)) for k in key_ids]

    async def aclose(self) -> None:
        return None


def topology(text: str) -> Topology:
    import tomllib

    return parse_topology(tomllib.loads(text), "test")


DIAMOND = """
[[nodes]]
id = "a"
[[nodes]]
id = "b"
[[nodes]]
id = "c"
[[nodes]]
id = "d"
[[links]]
a = "a"
b = "b"
distance_km = 5
[[links]]
a = "b"
b = "d"
distance_km = 5
[[links]]
a = "a"
b = "c"
distance_km = 6
[[links]]
a = "c"
b = "d"
distance_km = 6
[[saes]]
id = "alice"
node = "a"
[[saes]]
id = "bob"
node = "d"
[[saes]]
id = "carol"
node = "b"
"""


@dataclass
class Net:
    plan: NetworkPlan
    pki: NetworkPki
    nodes: dict[str, KmsNode]
    links: dict[str, MemoryLink]
    timers: Timers | None = None  # instead of the configs' (NodeConfig.timers)

    def sae(self, name: str, **kw: Any) -> httpx.AsyncClient:
        node = self.plan.topology.sae_node(name)
        assert node is not None
        certs = self.pki.sae(name)
        ctx = client_context(self.pki.ca_cert("sae"), certs.cert, certs.key)
        return httpx.AsyncClient(base_url=self.nodes[node].sae_url, verify=ctx, timeout=15.0, **kw)

    async def restart(self, node: str) -> None:
        await self.nodes[node].stop()
        self.nodes[node] = self._make(node)
        await self.nodes[node].start()

    def _make(self, node: str) -> KmsNode:
        cfg = load_node_config(self.plan.nodes[node].config)
        if self.timers is not None:
            cfg = replace(cfg, timers=self.timers)
        mods = {
            link.id: self.links[link.id].end(link.a == node)
            for link in self.plan.topology.links_of(node)
        }
        return KmsNode(cfg, mods)


async def wait_for(cond: Any, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def all_synced(net: Net) -> bool:
    return all(
        link.synced and link.neighbour_ok
        for node in net.nodes.values()
        for link in node.links.values()
    )


@asynccontextmanager
async def running_network(
    directory: Path,
    topo: Topology,
    options: Options | None = None,
    timers: Timers | None = None,
    **kw: Any,
) -> AsyncIterator[Net]:
    """In-process KMS nodes on memory links; ``timers``: every node's idle timers instead of
    the defaults (a test that waits for a module's alarm or outage to be polled)."""
    opts = replace(options or Options(testing=True, max_key_count=512), **kw)
    plan = make_plan(directory, topo, opts)
    pki = write_configs(plan)
    links = {link.id: MemoryLink(seed=i + 1) for i, link in enumerate(topo.links)}
    net = Net(plan, pki, {}, links, timers)
    for n in topo.node_ids():
        net.nodes[n] = net._make(n)
    await asyncio.gather(*(node.start() for node in net.nodes.values()))
    try:
        await wait_for(lambda: all_synced(net), what="links to sync")

        def stocked() -> bool:
            return all(
                node.store.link_keys.stock_bytes(lid, node.id) > 4096
                for node in net.nodes.values()
                for lid in node.links
            )

        await wait_for(stocked, what="link key stock")

        def all_up() -> bool:  # every node's link-state database says every link is up
            now = time.monotonic()
            return all(v.up for node in net.nodes.values() for v in node.lsdb.views(now))

        await wait_for(all_up, what="link-state advertisements")
        yield net
    finally:
        await asyncio.gather(*(node.stop() for node in net.nodes.values()))
