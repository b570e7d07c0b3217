"""Delay lines: the fibre's propagation delay (and loss) where the kernel has no ``tc netem``.

One process serves every line of a ``--netns`` network (``python -m
keyserver.network.linkdelay FILE``, FILE a JSON list of :class:`keyserver.network.netns.Forward`
records). It runs in the root namespace and makes each line's sockets inside the line's site
namespace (``setns(2)`` on the calling thread, for the one system call that creates the socket),
so a line listens on its site's address and its outgoing connection leaves the site through the
site's veth, like the process it stands in for.

:class:`DelayLine` (sans-I/O) gives each chunk of a direction its release time: arrival plus the
fibre's delay, plus one TCP retransmission timeout with the loss probability, never before the
chunk ahead of it (a TCP stream stays in order). A timer thread releases chunks at those times
(``threading.Condition.wait`` sleeps with microsecond resolution, where asyncio's epoll timers
round up to whole milliseconds: a 50 km link is 245 us) and hands each to the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import heapq
import itertools
import json
import os
import random
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keyserver.network.netns import TCP_RTO_MIN_S, Forward

CLONE_NEWNET = 0x40000000
CHUNK = 65536
HIGH_WATER = 4 << 20  # bytes queued towards one side before reading from the other pauses


@dataclass
class DelayLine:
    """Release times of one direction of one connection."""

    delay_s: float
    loss: float = 0.0
    rto_s: float = TCP_RTO_MIN_S
    draw: Callable[[], float] = random.random
    last: float = field(default=0.0)

    def release_at(self, now: float) -> float:
        t = now + self.delay_s
        if self.loss > 0 and self.draw() < self.loss:
            t += self.rto_s
        self.last = max(t, self.last)
        return self.last


def load_forwards(path: Path) -> list[Forward]:
    out = []
    for r in json.loads(path.read_text()):
        out.append(
            Forward(
                str(r["link"]),
                str(r["what"]),
                str(r["ns"]),
                (str(r["listen"][0]), int(r["listen"][1])),
                (str(r["target"][0]), int(r["target"][1])),
                float(r["delay_s"]),
                float(r["loss"]),
                str(r["source"]),
            )
        )
    return out


def dump_forwards(forwards: list[Forward], path: Path) -> None:
    path.write_text(
        json.dumps(
            [
                {
                    "link": f.link,
                    "what": f.what,
                    "ns": f.ns,
                    "listen": list(f.listen),
                    "target": list(f.target),
                    "delay_s": f.delay_s,
                    "loss": f.loss,
                    "source": f.source,
                }
                for f in forwards
            ],
            indent=1,
        )
        + "\n"
    )


class _Netns:
    """Switch the calling thread's network namespace for the creation of one socket."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL("libc.so.6", use_errno=True)
        self._root = os.open("/proc/self/ns/net", os.O_RDONLY)
        self._fds: dict[str, int] = {}

    def _setns(self, fd: int) -> None:
        if self._libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns: {os.strerror(err)}")

    def socket(self, ns: str) -> socket.socket:
        fd = self._fds.get(ns)
        if fd is None:
            fd = self._fds[ns] = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        self._setns(fd)
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        finally:
            self._setns(self._root)
        return s


class _Timer:
    """Releases (time, action) pairs in time order on a thread, each action on the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="delay-timer", daemon=True)
        self._thread.start()

    def at(self, when: float, action: Callable[[], None]) -> None:
        with self._cond:
            heapq.heappush(self._heap, (when, next(self._seq), action))
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                if not self._heap:
                    self._cond.wait()
                    continue
                when, _, action = self._heap[0]
                wait = when - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
                with contextlib.suppress(RuntimeError):  # the loop has closed
                    self._loop.call_soon_threadsafe(action)


async def _pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: DelayLine, timer: _Timer
) -> None:
    def send(data: bytes) -> Callable[[], None]:
        return lambda: None if writer.is_closing() else writer.write(data)

    def eof() -> None:
        if not writer.is_closing():
            with contextlib.suppress(OSError, RuntimeError):
                writer.write_eof()

    with contextlib.suppress(OSError, ConnectionError):
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            timer.at(line.release_at(time.monotonic()), send(data))
            while writer.transport.get_write_buffer_size() > HIGH_WATER:
                await asyncio.sleep(0.01)
    timer.at(line.release_at(time.monotonic()), eof)


async def serve(forwards: list[Forward], ready: Callable[[], None] = lambda: None) -> None:
    loop = asyncio.get_running_loop()
    netns = _Netns()
    timer = _Timer(loop)
    servers = []
    # asyncio holds a connection's handler task only through its transport while that reads:
    # the lines hold every handler until it ends, so none is collected mid-stream
    handlers: set[asyncio.Task[Any]] = set()

    def handler(f: Forward) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]:
        async def on_connect(r1: asyncio.StreamReader, w1: asyncio.StreamWriter) -> None:
            me = asyncio.current_task()
            if me is not None:
                handlers.add(me)
                me.add_done_callback(handlers.discard)
            s = netns.socket(f.ns)
            s.setblocking(False)
            try:
                # from the site's address: routed out of its interface (netns.line_commands),
                # though the target is a local address here too
                s.bind((f.source, 0))
                await loop.sock_connect(s, f.target)
                r2, w2 = await asyncio.open_connection(sock=s)
            except OSError:
                s.close()
                w1.close()
                return
            for w in (w1, w2):
                sock = w.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            lines = (DelayLine(f.delay_s, f.loss), DelayLine(f.delay_s, f.loss))
            try:
                await asyncio.gather(_pump(r1, w2, lines[0], timer), _pump(r2, w1, lines[1], timer))
                # what is still on the line arrives before the connection closes
                await asyncio.sleep(max(0.0, max(x.last for x in lines) - time.monotonic()))
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                pass  # shutting down: asyncio's stream callback would log a cancelled handler
            finally:
                for w in (w1, w2):
                    w.close()

        return on_connect

    for f in forwards:
        s = netns.socket(f.ns)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(f.listen)
        s.listen(64)
        s.setblocking(False)
        servers.append(await asyncio.start_server(handler(f), sock=s))
    ready()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        timer.close()
        for srv in servers:
            srv.close()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m keyserver.network.linkdelay FORWARDS.json", file=sys.stderr)
        return 2
    try:
        forwards = load_forwards(Path(args[0]))
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        print(f"linkdelay: cannot read {args[0]}: {e}", file=sys.stderr)
        return 2

    def ready() -> None:
        print(json.dumps({"event": "delay_lines_ready", "lines": len(forwards)}), flush=True)

    try:
        asyncio.run(serve(forwards, ready))
    except OSError as e:
        print(f"linkdelay: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
