"""Shared helpers for the keyserver tests: PKI, configs, a deterministic key source, a KME pair."""

from __future__ import annotations

import asyncio
import random
import socket
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from keyserver.etsi014.messages import Limits
from keyserver.kms.config import KmeConfig, LinkConfig, PeerConfig, TlsConfig
from keyserver.kms.kme import Kme
from keyserver.kms.link import BlockOutcome
from keyserver.pki.certificates import CertificateAuthority, CertPaths, DemoPki, ensure_demo_pki
from keyserver.pki.tls import client_context


class DeterministicSource:
    """Test stand-in for the BB84 link: seeded random blocks, instantly, optionally some aborted."""

    def __init__(
        self,
        seed: int = 7,
        block_bytes: int = 10_000,
        abort_every: int = 0,
        limit: int | None = None,
    ) -> None:
        self._rng = random.Random(seed)
        self._block = block_bytes
        self._abort_every = abort_every
        self._limit = limit
        self._n = 0

    async def next_block(self) -> BlockOutcome:
        await asyncio.sleep(0)
        if self._limit is not None and self._n >= self._limit:
            await asyncio.Event().wait()  # the link went quiet
        self._n += 1
        if self._abort_every and self._n % self._abort_every == 0:
            return BlockOutcome(b"", True, "qber_above_threshold", 0.2, 0.01, 10**6, True)
        return BlockOutcome(self._rng.randbytes(self._block), False, None, 0.02, 0.01, 10**6)

    async def aclose(self) -> None:
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class KmePki:
    demo: DemoPki
    mallory: CertPaths  # signed by the right CA, but not registered at any KME
    rogue: CertPaths  # signed by another CA, CN "alice"
    carol: CertPaths  # a second SAE at KME A
    dave: CertPaths  # a second SAE at KME B


def make_pki(directory: Path) -> KmePki:
    demo = ensure_demo_pki(directory)
    ca = CertificateAuthority.load(directory / "pki")
    mallory = ca.issue(directory / "pki", "mallory", "mallory")
    rogue_ca = CertificateAuthority.create(directory / "rogue", name="rogue CA")
    rogue = rogue_ca.issue(directory / "rogue", "alice-rogue", "alice")
    carol = ca.issue(directory / "pki", "carol", "carol")
    dave = ca.issue(directory / "pki", "dave", "dave")
    return KmePki(demo, mallory, rogue, carol, dave)


def pair_configs(
    pki: DemoPki,
    data_root: Path,
    *,
    port_a: int | None = None,
    port_b: int | None = None,
    max_key_count: int = 2000,
    limits: Limits | None = None,
    local_a: tuple[str, ...] = ("alice",),
    local_b: tuple[str, ...] = ("bob",),
) -> tuple[KmeConfig, KmeConfig]:
    pa = port_a or free_port()
    pb = port_b or free_port()
    lim = limits or Limits()
    a = KmeConfig(
        id="KME-A",
        host="127.0.0.1",
        port=pa,
        data_dir=data_root / "kme-a",
        tls=TlsConfig(pki.ca, pki.kme_a.cert, pki.kme_a.key),
        limits=lim,
        max_key_count=max_key_count,
        local_sae=local_a,
        peer=PeerConfig("KME-B", f"https://127.0.0.1:{pb}", local_b),
        link=LinkConfig(role="source"),
    )
    b = replace(
        a,
        id="KME-B",
        port=pb,
        data_dir=data_root / "kme-b",
        tls=TlsConfig(pki.ca, pki.kme_b.cert, pki.kme_b.key),
        local_sae=local_b,
        peer=PeerConfig("KME-A", f"https://127.0.0.1:{pa}", local_a),
        link=LinkConfig(role="sink"),
    )
    return a, b


def sae_client(pki: DemoPki, url: str, who: CertPaths | None, **kw: Any) -> httpx.AsyncClient:
    ctx = client_context(pki.ca, who.cert if who else None, who.key if who else None)
    return httpx.AsyncClient(base_url=url, verify=ctx, timeout=10.0, **kw)


def sync_ctx(pki: DemoPki, who: CertPaths | None) -> ssl.SSLContext:
    return client_context(pki.ca, who.cert if who else None, who.key if who else None)


async def wait_for(cond: Any, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@asynccontextmanager
async def running_pair(
    pki: DemoPki, data_root: Path, *, source: Any = None, fill: bool = True, **kw: Any
) -> AsyncIterator[tuple[Kme, Kme]]:
    """Both KMEs in this event loop (real HTTPS on loopback), fed by a deterministic source."""
    ca, cb = pair_configs(pki, data_root, **kw)
    a = Kme(ca, source=source or DeterministicSource(), pace=False)
    b = Kme(cb)
    await b.start()
    await a.start()
    try:
        if fill:
            cap = ca.max_key_count
            await wait_for(  # full in both directions, everything pushed: production is idle
                lambda: (
                    a.stored_key_count() >= cap
                    and b.stored_key_count() >= cap
                    and not a.store.pending_segments(1)
                ),
                what="key pool to fill",
            )
        yield a, b
    finally:
        await a.stop()
        await b.stop()
