"""A KMS node pair for tests of ETSI 014 clients: two real nodes (real HTTPS) in this process.

The pair is the ``pair`` topology (nodes ``KME-A`` with alice and ``KME-B`` with bob; more SAEs
on request) on one :class:`tests.support.node_fixtures.MemoryLink`. :class:`DeterministicSource`
says what that link produces. ``running_pair`` yields two :class:`PairEnd` objects (the node,
its URL, its stock in keys, the link's counters).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from keyserver.kms.node import KmsNode
from keyserver.kms.nodeconfig import load_node_config
from keyserver.network.plan import Options, make_plan, write_configs
from keyserver.pki.certificates import CertificateAuthority, CertPaths
from keyserver.pki.domains import NetworkPki
from keyserver.pki.tls import client_context
from keyserver.ports import free_port
from keyserver.topology import LinkSpec, NodeSpec, SaeSpec, Topology
from tests.support.node_fixtures import MemoryLink, wait_for

__all__ = [
    "DeterministicSource",
    "KmePki",
    "PairEnd",
    "free_port",
    "make_pki",
    "running_pair",
    "sae_client",
    "sync_ctx",
    "wait_for",
]


@dataclass(frozen=True)
class DeterministicSource:
    """What the pair's QKD link produces: seeded keys; `abort_every=1`: every block aborted
    (eavesdropper alarm); `limit`: only `limit` blocks of `block_bytes` in all (the nodes share
    them between the two directions)."""

    seed: int = 7
    block_bytes: int = 10_000
    abort_every: int = 0
    limit: int | None = None


@dataclass(frozen=True)
class DemoPki:
    network: NetworkPki
    ca: Path  # the SAE CA
    alice: CertPaths
    bob: CertPaths


@dataclass(frozen=True)
class KmePki:
    demo: DemoPki
    mallory: CertPaths  # signed by the SAE CA, but not registered at any node
    rogue: CertPaths  # signed by another CA, CN "alice"
    carol: CertPaths  # a second SAE at KME-A
    dave: CertPaths  # a second SAE at KME-B


def make_pki(directory: Path) -> KmePki:
    net = NetworkPki(directory / "pki")
    demo = DemoPki(net, net.ca_cert("sae"), net.sae("alice"), net.sae("bob"))
    rogue_ca = CertificateAuthority.create(directory / "rogue", name="rogue CA")
    rogue = rogue_ca.issue(directory / "rogue", "alice-rogue", "alice")
    return KmePki(demo, net.sae("mallory"), rogue, net.sae("carol"), net.sae("dave"))


class PairEnd:
    """One node of the pair, with what client tests look at."""

    def __init__(self, node: KmsNode, link: MemoryLink, key_size: int) -> None:
        self.node = node
        self.stats = link
        self._key_size = key_size

    @property
    def url(self) -> str:
        return self.node.sae_url

    @property
    def port(self) -> int:
        return self.node.sae_port

    @property
    def _listener(self) -> Any:
        return self.node._listener

    @property
    def store(self) -> Any:
        return self.node.store

    def stored_key_count(self) -> int:
        """Keys of key_size this node can still relay to the other (its stream on the link)."""
        lid = next(iter(self.node.links))
        return 8 * self.node.store.link_keys.stock_bytes(lid, self.node.id) // self._key_size


def _pair_topology(local_a: tuple[str, ...], local_b: tuple[str, ...]) -> Topology:
    return Topology(
        "pair",
        "test pair",
        (NodeSpec("KME-A", "A"), NodeSpec("KME-B", "B")),
        (LinkSpec("A-B", "KME-A", "KME-B", 10.0),),
        tuple(SaeSpec(s, "KME-A") for s in local_a) + tuple(SaeSpec(s, "KME-B") for s in local_b),
    )


@asynccontextmanager
async def running_pair(
    pki: DemoPki,
    data_root: Path,
    *,
    source: DeterministicSource | None = None,
    fill: bool = True,
    max_key_count: int = 2000,
    local_a: tuple[str, ...] = ("alice",),
    local_b: tuple[str, ...] = ("bob",),
    **options: Any,
) -> AsyncIterator[tuple[PairEnd, PairEnd]]:
    """Both nodes (real HTTPS on loopback); with `fill`, wait until each direction holds
    `max_key_count` keys of 256 bits and the link has stopped producing."""
    src = source or DeterministicSource()
    topo = _pair_topology(local_a, local_b)
    opts = Options(testing=True, max_key_count=max_key_count, **options)
    plan = make_plan(data_root, topo, opts)
    write_configs(plan, pki.network)
    cap_bytes = max_key_count * opts.key_size // 8
    link = MemoryLink(
        src.seed, key_bits=1024, keys_per_poll=512 if fill else max(1, src.block_bytes // 128)
    )
    if src.abort_every:
        link.alarm = True
    if src.limit is not None:
        link.budget = src.limit * src.block_bytes // 128
    elif fill:
        link.budget = 2 * -(-cap_bytes // 128)  # exactly enough to fill both directions
    nodes = {}
    for n in ("KME-A", "KME-B"):
        cfg = load_node_config(plan.nodes[n].config)
        nodes[n] = KmsNode(cfg, {"A-B": link.end(n == "KME-A")})
    await asyncio.gather(*(x.start() for x in nodes.values()))
    a = PairEnd(nodes["KME-A"], link, opts.key_size)
    b = PairEnd(nodes["KME-B"], link, opts.key_size)
    try:
        await wait_for(
            lambda: all(lk.synced for x in nodes.values() for lk in x.links.values()),
            what="the pair to sync",
        )
        if fill:
            await wait_for(
                lambda: (
                    a.stored_key_count() >= max_key_count and b.stored_key_count() >= max_key_count
                ),
                what="key pool to fill",
            )

        def heard(node: KmsNode, origin: KmsNode) -> bool:
            """`node` holds `origin`'s LSA saying what `origin` now says of each link's state."""
            lsa = node.lsdb.fresh(origin.id, time.monotonic())
            now = [(r.link, r.up) for r in origin.own_lsa().links]
            return lsa is not None and [(r.link, r.up) for r in lsa.links] == now

        await wait_for(
            lambda: heard(a.node, b.node) and heard(b.node, a.node),
            what="link-state advertisements of the links' current state",
        )
        yield a, b
    finally:
        await asyncio.gather(*(x.stop() for x in nodes.values()))


def sae_client(pki: DemoPki, url: str, who: CertPaths | None, **kw: Any) -> httpx.AsyncClient:
    ctx = client_context(pki.ca, who.cert if who else None, who.key if who else None)
    return httpx.AsyncClient(base_url=url, verify=ctx, timeout=10.0, **kw)


def sync_ctx(pki: DemoPki, who: CertPaths | None) -> ssl.SSLContext:
    return client_context(pki.ca, who.cert if who else None, who.key if who else None)
