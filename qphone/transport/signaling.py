"""Direct TCP signaling between two qphone terminals (asyncio).

The answering side listens (``SignalingListener``), the calling side connects
(``connect_signaling``); each gets a :class:`SignalingChannel` that carries
length-prefixed JSON messages (:mod:`qphone.core.signalmessage`): the caller
sends an ``offer``, the answerer replies with an ``answer`` or a ``reject``.
aiortc does not trickle ICE, so the SDPs already hold every gathered candidate.

Signaling is unauthenticated on purpose.  What it carries is not trusted: the
transport refuses an SDP whose m-sections disagree on the DTLS fingerprints, and
the end-to-end handshake signs a binding computed from the DTLS session actually
established (both certificates and its exporter, :mod:`qphone.core.channelbinding`),
not from the SDP text, so a relay that rewrites the fingerprints to terminate DTLS
itself makes the handshake fail.

Every failure raises a :class:`SignalingError` subclass whose message says what
happened and what to do about it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from qphone.core.displaytext import printable
from qphone.core.signalmessage import (
    HEADER_BYTES,
    RejectCode,
    SignalingProtocolError,
    SignalKind,
    SignalMessage,
    decode_body,
    decode_length,
    encode_message,
)

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_MESSAGE_TIMEOUT = 30.0

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MESSAGE_TIMEOUT",
    "PeerClosedError",
    "Refusal",
    "SignalingChannel",
    "SignalingConnectError",
    "SignalingError",
    "SignalingListener",
    "SignalingMessageError",
    "SignalingRejectedError",
    "SignalingTimeoutError",
    "accept_offer",
    "connect_signaling",
]


class SignalingError(Exception):
    """Base class of every signaling failure."""


class SignalingConnectError(SignalingError):
    """Could not reach the other terminal, or could not listen."""


class SignalingTimeoutError(SignalingError):
    """The other terminal did not connect or answer in time."""


class PeerClosedError(SignalingError):
    """The other terminal closed the signaling connection early."""


class SignalingMessageError(SignalingError):
    """The other terminal sent a malformed, oversized or unexpected message."""


class SignalingRejectedError(SignalingError):
    """The other terminal refused the call (``reject`` message): ``code`` says why, ``sender``
    is the SAE ID it gave (both unauthenticated, for the message to the user only)."""

    def __init__(self, message: str, code: RejectCode, sender: str, reason: str) -> None:
        super().__init__(message)
        self.code = code
        self.sender = sender
        self.reason = reason


@dataclass(frozen=True)
class Refusal:
    """An answerer's reason to refuse a caller: sent to it in a ``reject`` message."""

    code: RejectCode
    reason: str


def _addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class SignalingChannel:
    """One signaling connection carrying :class:`SignalMessage` objects."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.peer = peer

    async def send(self, message: SignalMessage) -> None:
        """Send one message."""
        try:
            self._writer.write(encode_message(message))
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            raise PeerClosedError(
                f"the signaling connection to {self.peer} broke while sending the "
                f"{message.kind.value} ({exc}); the other side probably hung up or crashed"
            ) from exc

    async def recv(
        self, expect: tuple[SignalKind, ...], timeout: float = DEFAULT_MESSAGE_TIMEOUT
    ) -> SignalMessage:
        """Receive one message whose kind is in ``expect`` (``reject`` raises)."""
        wanted = " or ".join(k.value for k in expect)
        try:
            async with asyncio.timeout(timeout):
                header = await self._reader.readexactly(HEADER_BYTES)
                length = decode_length(header)
                body = await self._reader.readexactly(length)
        except TimeoutError as exc:
            raise SignalingTimeoutError(
                f"no {wanted} from {self.peer} within {timeout:.1f} s; is the other side "
                "still running? (over a slow link, give more time with --connect-timeout)"
            ) from exc
        except asyncio.IncompleteReadError as exc:
            raise PeerClosedError(
                f"{self.peer} closed the signaling connection before sending its {wanted} "
                f"(got {len(exc.partial)} stray bytes); look at the other terminal for the reason"
            ) from exc
        except (ConnectionError, OSError) as exc:
            raise PeerClosedError(
                f"the signaling connection to {self.peer} broke while waiting for its "
                f"{wanted}: {exc}"
            ) from exc
        except SignalingProtocolError as exc:
            raise SignalingMessageError(f"bad signaling message from {self.peer}: {exc}") from exc
        try:
            message = decode_body(body)
        except SignalingProtocolError as exc:
            raise SignalingMessageError(f"bad signaling message from {self.peer}: {exc}") from exc
        if message.kind is SignalKind.REJECT and SignalKind.REJECT not in expect:
            raise SignalingRejectedError(
                f"{self.peer} refused the call: {printable(message.reason)} (unauthenticated "
                "signaling: it may come from anyone on the path)",
                message.code or RejectCode.REFUSED,
                message.sender,
                message.reason,
            )
        if message.kind not in expect:
            raise SignalingMessageError(
                f"{self.peer} sent an {message.kind.value} where an {wanted} was expected"
            )
        return message

    async def close(self) -> None:
        """Close the connection (idempotent, never raises)."""
        if self._writer.is_closing():
            return
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError, TimeoutError):
            async with asyncio.timeout(1.0):
                await self._writer.wait_closed()

    async def __aenter__(self) -> SignalingChannel:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def connect_signaling(
    host: str, port: int, timeout: float = DEFAULT_CONNECT_TIMEOUT
) -> SignalingChannel:
    """Connect to an answering terminal listening on ``host:port``."""
    where = _addr(host, port)
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
    except TimeoutError as exc:
        raise SignalingTimeoutError(
            f"no reply from {where} within {timeout:.1f} s: check the address, that the host is "
            "reachable and that no firewall drops the port (or give more time with "
            "--connect-timeout)"
        ) from exc
    except ConnectionRefusedError as exc:
        raise SignalingConnectError(
            f"connection refused by {where}: nobody is listening there. Start "
            f"`qphone answer --listen {where}` in the other terminal first, or fix the address"
        ) from exc
    except OSError as exc:
        raise SignalingConnectError(f"cannot reach {where}: {exc.strerror or exc}") from exc
    return SignalingChannel(reader, writer, where)


class SignalingListener:
    """Listening socket of the answering terminal; accepts one caller at a time.

    Once :attr:`busy` is set (the call is up), every further caller is told ``busy`` at once;
    the listener stays open until it is closed, so a second caller hears "busy", not "nobody is
    listening".  ``name`` (this terminal's SAE ID) goes into those replies."""

    def __init__(self, name: str = "") -> None:
        self._server: asyncio.Server | None = None
        self._pending: asyncio.Queue[SignalingChannel] = asyncio.Queue(maxsize=1)
        self.host = ""
        self.port = 0
        self.name = name
        self.busy = False
        self.busy_refused = 0  # callers told "busy"

    @classmethod
    async def open(cls, host: str, port: int, name: str = "") -> SignalingListener:
        """Listen on ``host:port`` (port 0 picks a free port, see :attr:`port`)."""
        self = cls(name)
        try:
            self._server = await asyncio.start_server(self._on_connect, host, port)
        except OSError as exc:
            hint = ""
            if exc.errno == errno.EADDRINUSE:
                hint = (
                    ": the port is in use (another qphone answering?); pick another --listen port"
                )
            elif exc.errno == errno.EADDRNOTAVAIL:
                hint = ": this machine has no such address; use 0.0.0.0 or one of its addresses"
            elif exc.errno == errno.EACCES:
                hint = ": ports below 1024 need privileges; use a higher port"
            raise SignalingConnectError(
                f"cannot listen on {_addr(host, port)}: {exc.strerror or exc}{hint}"
            ) from exc
        sockname = self._server.sockets[0].getsockname()
        self.host, self.port = str(sockname[0]), int(sockname[1])
        return self

    @property
    def address(self) -> str:
        return _addr(self.host, self.port)

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        peer = _addr(str(peername[0]), int(peername[1])) if peername else "caller"
        channel = SignalingChannel(reader, writer, peer)
        if not self.busy:
            with contextlib.suppress(asyncio.QueueFull):
                self._pending.put_nowait(channel)
                return
        # Busy: one call at a time.
        self.busy_refused += 1
        with contextlib.suppress(SignalingError):
            await channel.send(
                SignalMessage(
                    SignalKind.REJECT,
                    reason="busy: already in a call",
                    code=RejectCode.BUSY,
                    sender=self.name,
                )
            )
        await channel.close()

    async def accept(self, timeout: float | None = None) -> SignalingChannel:
        """Wait for the next caller (``timeout`` None waits forever)."""
        try:
            async with asyncio.timeout(timeout):
                return await self._pending.get()
        except TimeoutError as exc:
            raise SignalingTimeoutError(
                f"no caller connected to {self.address} within {timeout:.1f} s"
            ) from exc

    async def close(self) -> None:
        """Stop listening and drop callers that were not accepted."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._server.wait_closed()
            self._server = None
        while not self._pending.empty():
            await self._pending.get_nowait().close()

    async def __aenter__(self) -> SignalingListener:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def accept_offer(
    listener: SignalingListener,
    screen: Callable[[SignalMessage], Refusal | None] | None,
    accept_timeout: float | None,
    message_timeout: float,
) -> tuple[SignalingChannel, SignalMessage]:
    """Take callers from ``listener`` until one's offer passes ``screen``; return its channel
    and offer.

    ``screen`` sees each caller's offer first: a :class:`Refusal` is sent back to that caller
    (a reject from :attr:`SignalingListener.name`), its connection closed and the next caller
    awaited.  ``accept_timeout`` bounds the whole wait (None: forever), ``message_timeout`` the
    wait for each offer.
    """
    loop = asyncio.get_running_loop()
    deadline = None if accept_timeout is None else loop.time() + accept_timeout
    while True:
        left = None if deadline is None else max(0.0, deadline - loop.time())
        channel = await listener.accept(timeout=left)
        offer = await channel.recv((SignalKind.OFFER,), timeout=message_timeout)
        refusal = screen(offer) if screen is not None else None
        if refusal is None:
            return channel, offer
        with contextlib.suppress(SignalingError):
            await channel.send(
                SignalMessage(
                    SignalKind.REJECT,
                    reason=refusal.reason,
                    code=refusal.code,
                    sender=listener.name,
                )
            )
        await channel.close()
