"""The launcher's status socket: ``network status`` answered by the process that already holds a
connection to every node.

Asking 167 nodes from a new process costs 167 TLS handshakes (both ends) before any state is
read; the launcher keeps one kept-alive connection per node (:class:`StateClient`), so it
collects the same states without them. :class:`StatusSocket` serves, on a Unix socket in the
network's directory (``DIR/status.sock``, mode 0600 in the launcher's 0700 directory: only its
owner), the summary :func:`keyserver.network.status.summarise` makes from a fresh collection.
:func:`ask` is the client: ``None`` when no launcher answers there (none running, or one killed
before it could remove the socket), and ``network status`` then asks the nodes itself.

Protocol: the client connects and sends ``summary\\n``; the launcher answers one JSON object
and closes. Anything else is answered with ``{"error": ...}``. One request at a time (a second
waits for the first: both would ask the same nodes).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

REQUEST = b"summary\n"
SOCKET_NAME = "status.sock"
READ_TIMEOUT = 2.0  # the client's request line must come within this
MAX_ANSWER = 64 << 20


def socket_path(directory: Path) -> Path:
    return directory / SOCKET_NAME


class StatusSocket:
    """Serve `summary()` on ``DIR/status.sock`` from a daemon thread until :meth:`close`."""

    def __init__(self, directory: Path, summary: Callable[[], dict[str, Any]]) -> None:
        self.path = socket_path(directory)
        self._summary = summary
        self.path.unlink(missing_ok=True)  # left by a launcher that was killed
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self._sock.bind(str(self.path))
        finally:
            os.umask(old)
        self._sock.listen(8)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="status-socket", daemon=True)
        self._thread.start()

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
                answer: dict[str, Any] = {"error": "send exactly 'summary\\n'"}
            else:
                answer = self._summary()
            conn.sendall(json.dumps(answer).encode())
        except OSError:
            return  # the client went away

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(timeout=5)
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
