"""The launcher's status socket: ``network status`` answered by the process that already holds a
connection to every node.

Asking 167 nodes from a new process costs 167 TLS handshakes (both ends) before any state is
read; the launcher keeps one kept-alive connection per node (:class:`StateClient`), so it
collects the same states without them. :class:`StatusSocket` serves, on a Unix socket in the
network's directory (``DIR/status.sock``, mode 0600 in the launcher's 0700 directory: only its
owner), the summary :func:`keyserver.network.status.summarise` makes from a collection, kept in
a :class:`~keyserver.network.statuscache.SummaryCache`: a request is answered from memory when
the cached summary is fresh enough (``age_s`` says how old), else it waits for a collection;
after a request a second thread refreshes the cache in the background for a while, at a modest
rate, so that asking again (``watch``) costs no collection; nothing is collected while nobody
asks.
:func:`ask` is the client: ``None`` when no launcher answers there (none running, or one killed
before it could remove the socket), and ``network status`` then asks the nodes itself.

Protocol: the client connects and sends ``summary\\n``; the launcher answers one JSON object
and closes (the summary with ``age_s``, or ``{"error": ...}`` when none could be collected).
Anything else is answered with ``{"error": ...}``. One request at a time; one collection at a
time.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from keyserver.network.statuscache import Action, CachePolicy, SummaryCache

REQUEST = b"summary\n"
SOCKET_NAME = "status.sock"
READ_TIMEOUT = 2.0  # the client's request line must come within this
MAX_ANSWER = 64 << 20
COLLECT_WAIT = 8.0  # longest a request waits for a collection (the client waits 10 s)


def socket_path(directory: Path) -> Path:
    return directory / SOCKET_NAME


class StatusSocket:
    """Serve `summary()` on ``DIR/status.sock`` from a daemon thread until :meth:`close`, from a
    :class:`SummaryCache` that a second thread refreshes only while someone asks."""

    def __init__(
        self,
        directory: Path,
        summary: Callable[[], dict[str, Any]],
        policy: CachePolicy | None = None,
    ) -> None:
        self.path = socket_path(directory)
        self._summary = summary
        self.cache = SummaryCache(policy)
        self._cond = threading.Condition()
        self.path.unlink(missing_ok=True)  # left by a launcher that was killed
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self._sock.bind(str(self.path))
        finally:
            os.umask(old)
        self._sock.listen(8)
        self._closed = threading.Event()
        self._refresher = threading.Thread(target=self._refresh, name="status-refresh", daemon=True)
        self._refresher.start()
        self._thread = threading.Thread(target=self._serve, name="status-socket", daemon=True)
        self._thread.start()

    def _refresh(self) -> None:
        """Collect when a request waits, and in the background while someone asks; sleep on
        the condition while idle (no polling)."""
        while True:
            with self._cond:
                while True:
                    if self._closed.is_set():
                        return
                    now = time.monotonic()
                    due = self.cache.next_refresh(now)
                    if due is not None and due <= now:
                        break
                    self._cond.wait(None if due is None else due - now)
            started = time.monotonic()
            try:
                summary = self._summary()
            except Exception:  # a malformed node state: answer "ask the nodes", keep serving
                with self._cond:
                    self.cache.failed(started)
                    self._cond.notify_all()
                continue
            with self._cond:
                self.cache.collected(summary, started, time.monotonic())
                self._cond.notify_all()

    def current(self) -> dict[str, Any] | None:
        """The summary a request gets now: the cached one when fresh enough, else the next
        collection's (waiting at most :data:`COLLECT_WAIT`; then the cached one, however old,
        or None if there is none)."""
        with self._cond:
            now = time.monotonic()
            if self.cache.on_request(now) is Action.COLLECT:
                seen = self.cache.attempts
                self._cond.notify_all()
                self._cond.wait_for(
                    lambda: self.cache.attempts != seen or self._closed.is_set(),
                    timeout=COLLECT_WAIT,
                )
            else:
                self._cond.notify_all()  # the background refreshes go on
            return self.cache.answer(time.monotonic())

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            with conn:
                self._answer(conn)

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(READ_TIMEOUT)
        try:
            request = conn.recv(len(REQUEST) + 1)
            if request != REQUEST:
                answer: dict[str, Any] | None = {"error": "send exactly 'summary\\n'"}
            else:
                answer = self.current()
            if answer is None:
                answer = {"error": "no summary: the launcher could not collect one"}
            conn.sendall(json.dumps(answer).encode())
        except OSError:
            return  # the client went away

    def close(self) -> None:
        self._closed.set()
        with self._cond:
            self._cond.notify_all()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(timeout=5)
        self._refresher.join(timeout=5)
        self.path.unlink(missing_ok=True)


def ask(directory: Path, timeout: float = 10.0) -> dict[str, Any] | None:
    """The running launcher's summary of the network in `directory`, or None if no launcher
    answers on its socket."""
    path = socket_path(directory)
    if not path.exists():
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            s.sendall(REQUEST)
            chunks: list[bytes] = []
            size = 0
            while chunk := s.recv(1 << 16):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_ANSWER:
                    return None
    except OSError:
        return None
    try:
        answer = json.loads(b"".join(chunks))
    except ValueError:
        return None
    if not isinstance(answer, dict) or "error" in answer or "nodes" not in answer:
        return None
    return answer
