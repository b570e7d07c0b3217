"""`network status` through the launcher: its status socket (the cached summary, refreshed only
while someone asks; owner only, gone when it stops; a stale socket means "ask the nodes") and
its state client's kept-alive connections (one TLS connection per node, a new one when the node
closed it)."""

from __future__ import annotations

import asyncio
import json
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from keyserver.network.stateclient import StateClient
from keyserver.network.statuscache import CachePolicy
from keyserver.network.statussocket import REQUEST, StatusSocket, ask, socket_path
from keyserver.pki.domains import NetworkPki
from keyserver.pki.tls import server_context


def test_the_status_socket_serves_the_summary_to_its_owner_only(tmp_path: Path) -> None:
    asked: list[int] = []

    def summary() -> dict[str, Any]:
        asked.append(1)
        return {"nodes": {"a": {"up": True}}, "links": {}, "n": len(asked)}

    # no background refreshes here: every collection is one a request waited for
    server = StatusSocket(tmp_path, summary, CachePolicy(fresh_s=60.0, linger_s=0.0))
    try:
        assert stat.S_IMODE(socket_path(tmp_path).stat().st_mode) == 0o600
        first = ask(tmp_path)
        assert first is not None and first["n"] == 1 and first["nodes"] == {"a": {"up": True}}
        second = ask(tmp_path)  # fresh enough: from memory, with its age
        assert second is not None and second["n"] == 1 and second["age_s"] >= first["age_s"]
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:  # not the protocol
            s.connect(str(socket_path(tmp_path)))
            s.sendall(b"GET / HTTP/1.1\r\n")
            assert "error" in json.loads(s.recv(4096))
        assert len(asked) == 1
    finally:
        server.close()
    assert not socket_path(tmp_path).exists()
    assert ask(tmp_path) is None


def test_the_cache_is_refreshed_only_while_someone_asks(tmp_path: Path) -> None:
    asked: list[float] = []

    def summary() -> dict[str, Any]:
        asked.append(time.monotonic())
        return {"nodes": {}, "links": {}, "n": len(asked)}

    policy = CachePolicy(fresh_s=60.0, linger_s=0.3, min_interval_s=0.05)
    server = StatusSocket(tmp_path, summary, policy)
    try:
        time.sleep(0.3)
        assert asked == []  # nobody asked: nothing collected
        answers: list[dict[str, Any] | None] = []
        end = time.monotonic() + 20
        while len(asked) < 3 and time.monotonic() < end:  # someone asks again and again
            answers.append(ask(tmp_path))
            time.sleep(0.02)
        assert len(asked) >= 3  # refreshed in the background while asked,
        assert all(a is not None for a in answers)
        assert len(answers) > 1 and answers[0] is not None and answers[0]["n"] == 1
        last = time.monotonic()
        time.sleep(max(0.0, last + 0.8 - time.monotonic()))  # the linger (0.3 s) is over
        idle = len(asked)
        time.sleep(0.5)
        assert len(asked) == idle  # idle: no polling
        again = ask(tmp_path)  # fresh enough (60 s): from memory, with its age
        assert again is not None and again["n"] == idle and again["age_s"] > 0.2
    finally:
        server.close()


def test_a_collection_that_fails_is_no_answer_and_the_next_one_serves(tmp_path: Path) -> None:
    calls: list[int] = []

    def summary() -> dict[str, Any]:
        calls.append(1)
        if len(calls) == 1:
            raise KeyError("links")  # a malformed node state
        return {"nodes": {}, "links": {}}

    server = StatusSocket(tmp_path, summary, CachePolicy(linger_s=0.0, min_interval_s=0.0))
    try:
        assert ask(tmp_path) is None  # `network status` then asks the nodes itself
        assert ask(tmp_path) == {"nodes": {}, "links": {}, "age_s": pytest.approx(0, abs=1)}
    finally:
        server.close()


def test_a_stale_socket_means_no_launcher(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:  # a killed launcher's
        s.bind(str(socket_path(tmp_path)))
    assert ask(tmp_path) is None
    server = StatusSocket(tmp_path, lambda: {"nodes": {}})  # a new launcher takes it over
    try:
        assert ask(tmp_path) == {"nodes": {}, "age_s": pytest.approx(0, abs=1)}
    finally:
        server.close()
    assert REQUEST.endswith(b"\n")


class _Node:
    """A stand-in node's ``GET /kms/v1/state`` over HTTPS (node CA, client certificates), in
    its own thread; records the client port of every request."""

    def __init__(self, pki: NetworkPki, keepalive: float) -> None:
        creds = pki.node("standin")
        self.ctx = server_context(creds.node_ca, creds.node.cert, creds.node.key)
        self.keepalive = keepalive
        self.peers: list[int] = []
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def state(request: web.Request) -> web.Response:
            self.peers.append(request.transport.get_extra_info("peername")[1])  # type: ignore[union-attr]
            return web.json_response({"node": "standin", "links": {}})

        app = web.Application()
        app.router.add_get("/kms/v1/state", state)
        self.runner = web.AppRunner(app, access_log=None, keepalive_timeout=self.keepalive)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=self.ctx)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.ready.set()
        self.loop.run_forever()

    def stop(self) -> None:
        if not self.thread.is_alive():
            return

        async def down() -> None:
            await self.runner.cleanup()

        asyncio.run_coroutine_threadsafe(down(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def pki(tmp_path: Path) -> NetworkPki:
    return NetworkPki(tmp_path / "pki")


@pytest.fixture
def node(pki: NetworkPki) -> Iterator[_Node]:
    n = _Node(pki, keepalive=0.5)
    yield n
    n.stop()


def test_the_state_client_keeps_one_connection_per_node(pki: NetworkPki, node: _Node) -> None:
    client = StateClient(pki.ca_cert("node"), pki.node_admin())
    url = f"https://127.0.0.1:{node.port}"
    try:
        for _ in range(3):
            assert client.get(url) == {"node": "standin", "links": {}}
        assert len(node.peers) == 3 and len(set(node.peers)) == 1  # one TLS connection
        time.sleep(1.5)  # the node closes the idle connection
        assert client.get(url) == {"node": "standin", "links": {}}
        assert len(set(node.peers)) == 2
        node.stop()
        assert client.get(url) is None  # the node is gone: no answer, no exception
    finally:
        client.close()
