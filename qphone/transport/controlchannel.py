"""The control channel: a reliable, ordered data channel (negotiated id 0) for the layer above.

It carries the handshake, rekey and bye messages of :mod:`qphone.core` as opaque messages of
1..``MAX_CONTROL_BYTES`` bytes. Every message received counts as a sign of life (``heard``)
and waits in a bounded :class:`~qphone.transport.controlinbox.ControlInbox` until read; a
peer that sends more than ``MAX_CONTROL_BACKLOG`` unread messages is told off through
``on_flood`` (the transport closes). Malformed or oversized messages are dropped and logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiortc import RTCDataChannel, RTCPeerConnection

from qphone.transport.config import MAX_CONTROL_BACKLOG, MAX_CONTROL_BYTES
from qphone.transport.controlinbox import ControlInbox

logger = logging.getLogger(__name__)

CONTROL_CHANNEL_ID = 0


class ControlChannel:
    """The transport's control data channel and the inbox of what it received."""

    def __init__(
        self,
        closed: asyncio.Event,
        close_reason: Callable[[], str],
        heard: Callable[[], None],
        on_flood: Callable[[str], None],
    ) -> None:
        self._inbox = ControlInbox(closed, close_reason)
        self._heard = heard
        self._on_flood = on_flood
        self.channel: RTCDataChannel | None = None
        """The data channel once opened; the transport is up when it is ``open``."""

    def open(self, pc: RTCPeerConnection) -> RTCDataChannel:
        """Create the control data channel on ``pc`` (both ends, negotiated id 0)."""
        self.channel = pc.createDataChannel(
            "qphone-control", negotiated=True, id=CONTROL_CHANNEL_ID, ordered=True
        )
        self.channel.on("message", self._on_message)
        return self.channel

    def send(self, data: bytes) -> None:
        """Send one message (1..MAX_CONTROL_BYTES bytes); the caller checked the transport is up."""
        assert self.channel is not None
        if not isinstance(data, bytes) or not 0 < len(data) <= MAX_CONTROL_BYTES:
            raise ValueError(f"control messages are 1..{MAX_CONTROL_BYTES} bytes")
        self.channel.send(data)

    async def recv(self, timeout: float | None = None) -> bytes:
        """Next message; raises TransportClosedError once closed and drained, TimeoutError."""
        return await self._inbox.get(timeout)

    def _on_message(self, message: bytes | str) -> None:
        self._heard()
        if not isinstance(message, bytes) or len(message) > MAX_CONTROL_BYTES:
            logger.warning("dropping a malformed or oversized control message")
            return
        if not self._inbox.put(message):
            self._on_flood(
                f"peer sent more than {MAX_CONTROL_BACKLOG} control messages that were not read"
            )
