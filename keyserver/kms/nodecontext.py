"""What the agents of one KMS node share: its config, store, links, counters and peers.

The node (:mod:`keyserver.kms.node`) makes one :class:`NodeContext` and hands it to each agent
(:mod:`~keyserver.kms.saeservice`, :mod:`~keyserver.kms.linkmanager`,
:mod:`~keyserver.kms.linkstate`, :mod:`~keyserver.kms.relayinitiator`,
:mod:`~keyserver.kms.relayreceiver`). Besides the shared state it holds the plumbing they all
use: node-to-node POSTs (a client per peer, made on the first message), the caller checks of
the node API, background tasks, and jittered timers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Coroutine
from typing import Any

from aiohttp import web

from keyserver.etsi014 import messages as etsi014
from keyserver.etsi014.messages import EtsiError
from keyserver.etsi014.server import caller_id
from keyserver.jsonlog import log
from keyserver.kms.locallink import LocalLink
from keyserver.kms.nodeclient import NodeClient, NodeUnreachable
from keyserver.kms.nodeconfig import NodeConfig
from keyserver.kms.nodestore import NodeStore
from keyserver.kms.recorder import Recorder

_LOG = logging.getLogger("keyserver.kms.node")
MAX_NODE_BODY = 4 * 1024 * 1024
SYNC_PATH = "/kms/v1/link/sync"


def now_ms() -> int:
    return int(time.time() * 1000)


class NodeContext:
    """One node's shared state; ``store``, ``links`` and ``recorder`` are set by ``start``."""

    store: NodeStore

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.id = config.id
        self.links: dict[str, LocalLink] = {}
        self.recorder: Recorder | None = None
        self.failed = asyncio.Event()  # a background task died: the node must stop
        self.tasks: list[asyncio.Task[None]] = []
        self.rng = random.Random()  # timer jitter only (no security use)
        # a client (TLS context, connection pool) per peer node, made on the first message to
        # it: most nodes of a large network never talk to most others
        self.peer_ids = {
            n for n in config.topology.node_ids() if n != self.id and n in config.node_urls
        }
        self.peers: dict[str, NodeClient] = {}
        self.counters: dict[str, int] = {
            "relays_started": 0,
            "relays_delivered": 0,
            "relays_failed": 0,
            "hops_forwarded": 0,
            "hops_refused": 0,
            "relays_received": 0,
            "direct_keys_issued": 0,  # one-hop direct keys given to a master SAE here
            "direct_keys_delivered": 0,  # ... and to a slave SAE here
            "voids_sent": 0,
            "voids_received": 0,
            "held_expired": 0,
            "desyncs_repaired": 0,
            "announcements": 0,
            # what the node does on its own (docs/network.md, "Timings"): these grow with
            # change (keys drawn, links up/down, relays), not with time, while a network idles
            "module_polls": 0,
            "module_watches": 0,  # watched Get status requests (each held until news)
            "syncs_sent": 0,
            "lsa_floods": 0,
            "lsa_posts": 0,
            "wakeups": 0,
        }

    def neighbours(self) -> set[str]:
        return {link.neighbour for link in self.links.values()}

    # -- tasks and timers ------------------------------------------------------------------------
    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """A background loop for the node's lifetime: if it fails, the node has failed."""
        task = asyncio.create_task(coro)
        task.add_done_callback(self._task_done)
        self.tasks.append(task)

    def spawn_transient(self, coro: Coroutine[Any, Any, None]) -> None:
        """A task that ends on its own (cancelled by ``stop`` if it has not)."""
        task = asyncio.create_task(coro)
        self.tasks.append(task)
        task.add_done_callback(lambda t: self.tasks.remove(t) if t in self.tasks else None)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log(_LOG, logging.CRITICAL, "background_task_failed", error=repr(task.exception()))
            self.failed.set()

    def jittered(self, seconds: float) -> float:
        j = self.config.timers.jitter
        return seconds * self.rng.uniform(1.0 - j, 1.0 + j)

    async def sleep_or(
        self,
        event: asyncio.Event,
        seconds: float | None,
        also: asyncio.Future[Any] | None = None,
    ) -> None:
        """Until `event` is set, `seconds` pass (None: no limit) or `also` (a request in
        flight, say) is done; clears the event."""
        if also is not None:
            woken = asyncio.ensure_future(event.wait())
            try:
                await asyncio.wait(
                    (also, woken), timeout=seconds, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                woken.cancel()
        elif seconds is None:
            await event.wait()
        else:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await event.wait()
        event.clear()
        self.counters["wakeups"] += 1

    # -- node-to-node requests -------------------------------------------------------------------
    async def post(self, peer: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        client = self.peers.get(peer)
        if client is None:
            if peer not in self.peer_ids:
                raise NodeUnreachable(f"no URL for node {peer}")
            client = self.peers[peer] = NodeClient(
                peer,
                self.config.node_urls[peer],
                self.config.node_api.tls,
                self.recorder,
                timeout=self.config.timers.request_timeout,
            )
        try:
            return await client.post(path, body)
        except NodeUnreachable as e:
            if e.status == 0:  # no answer at all: is the neighbour still there? sync now
                for link in self.links.values():
                    if link.neighbour == peer and link.transmitter and path != SYNC_PATH:
                        link.poke.set()
            raise

    async def post_quiet(self, peer: str, path: str, body: dict[str, Any]) -> None:
        with contextlib.suppress(NodeUnreachable):
            await self.post(peer, path, body)

    # -- the node API's callers ------------------------------------------------------------------
    def node_caller(self, request: web.Request) -> str:
        cn = caller_id(request)
        if cn is None or cn not in self.peer_ids:
            raise EtsiError(401, "node endpoints are for the nodes of this network only")
        return cn

    async def node_body(self, request: web.Request) -> dict[str, Any]:
        self.node_caller(request)
        if request.content_length is not None and request.content_length > MAX_NODE_BODY:
            raise etsi014.bad_request("message too large")
        return etsi014.parse_json_object(await request.read(), MAX_NODE_BODY)

    def link_from(
        self, obj: dict[str, Any], request: web.Request, transmitter_caller: bool = False
    ) -> LocalLink:
        caller = self.node_caller(request)
        link = self.links.get(str(obj.get("link")))
        if link is None or link.neighbour != caller:
            raise EtsiError(401, "that link does not join the caller and this node")
        if transmitter_caller and link.spec.a != caller:
            raise EtsiError(401, "only the transmitter side announces or syncs on a link")
        return link
