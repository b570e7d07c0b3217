"""Control messages received and not read yet: a bounded inbox that ends when the transport does."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from qphone.transport.config import MAX_CONTROL_BACKLOG
from qphone.transport.errors import TransportClosedError


class ControlInbox:
    """FIFO of control messages; ``closed`` and ``close_reason`` come from the transport."""

    def __init__(self, closed: asyncio.Event, close_reason: Callable[[], str]) -> None:
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._closed = closed
        self._close_reason = close_reason

    def put(self, message: bytes) -> bool:
        """Queue a message; False (nothing queued) when MAX_CONTROL_BACKLOG are unread."""
        if self._queue.qsize() >= MAX_CONTROL_BACKLOG:
            return False
        self._queue.put_nowait(message)
        return True

    async def get(self, timeout: float | None = None) -> bytes:
        """Next message; TransportClosedError once closed and drained, TimeoutError."""
        if self._queue.empty() and self._closed.is_set():
            raise TransportClosedError(f"transport closed: {self._close_reason()}")
        get = asyncio.ensure_future(self._queue.get())
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            done, _ = await asyncio.wait(
                {get, closed}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            closed.cancel()
            if not get.done():
                get.cancel()
        if get in done:
            return get.result()
        if closed in done:
            raise TransportClosedError(f"transport closed: {self._close_reason()}")
        raise TimeoutError(f"no control message within {timeout} s")
