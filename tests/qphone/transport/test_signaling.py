"""Signaling over real TCP connections on 127.0.0.1 (qphone.transport.signaling)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from qphone.core.signalmessage import SignalKind, SignalMessage, encode_message
from qphone.transport.calltransport import CallTransport
from qphone.transport.config import LOOPBACK_ADDRESSES, TransportConfig
from qphone.transport.signaling import (
    PeerClosedError,
    SignalingConnectError,
    SignalingListener,
    SignalingMessageError,
    SignalingRejectedError,
    SignalingTimeoutError,
    connect_signaling,
)

HOST = "127.0.0.1"
SDP = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"


async def test_offer_answer_over_tcp() -> None:
    async with await SignalingListener.open(HOST, 0) as listener:

        async def answerer() -> None:
            channel = await listener.accept(timeout=5)
            async with channel:
                offer = await channel.recv((SignalKind.OFFER,), timeout=5)
                await channel.send(SignalMessage(SignalKind.ANSWER, sdp=offer.sdp + "a=x\r\n"))

        task = asyncio.ensure_future(answerer())
        async with await connect_signaling(HOST, listener.port, timeout=5) as channel:
            await channel.send(SignalMessage(SignalKind.OFFER, sdp=SDP))
            answer = await channel.recv((SignalKind.ANSWER,), timeout=5)
        await task
    assert answer.sdp == SDP + "a=x\r\n"


async def test_connection_refused_names_the_fix(free_port: Callable[[], int]) -> None:
    port = free_port()
    with pytest.raises(SignalingConnectError, match="nobody is listening") as info:
        await connect_signaling(HOST, port, timeout=5)
    assert f"qphone answer --listen 127.0.0.1:{port}" in str(info.value)


async def test_listen_on_busy_port_is_clear() -> None:
    async with await SignalingListener.open(HOST, 0) as listener:
        with pytest.raises(SignalingConnectError, match="in use"):
            await SignalingListener.open(HOST, listener.port)


FakeHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def fake_peer(handler: FakeHandler) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, HOST, 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()


def caller_transport(signaling_timeout: float = 5.0) -> CallTransport:
    return CallTransport(
        TransportConfig(host_addresses=LOOPBACK_ADDRESSES, signaling_timeout=signaling_timeout)
    )


async def run_caller_against(handler: FakeHandler, signaling_timeout: float = 5.0) -> None:
    async for port in fake_peer(handler):
        transport = caller_transport(signaling_timeout)
        try:
            await transport.connect_as_caller(HOST, port)
        finally:
            await transport.close()


async def test_garbage_reply_gives_clear_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(struct.pack(">I", 9) + b"garbage!!")
        await writer.drain()
        await asyncio.sleep(1)
        writer.close()

    with pytest.raises(SignalingMessageError, match="not valid JSON"):
        await run_caller_against(handler)


async def test_http_server_is_rejected_by_size() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)
        writer.close()

    with pytest.raises(SignalingMessageError, match="exceeds the limit"):
        await run_caller_against(handler)


async def test_oversized_message_rejected_before_reading_it() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Announce 16 MB but send only a little: the reader must not wait for the rest.
        writer.write(struct.pack(">I", 16 * 1024 * 1024) + b"{" * 100)
        await writer.drain()
        await asyncio.sleep(5)
        writer.close()

    with pytest.raises(SignalingMessageError, match="exceeds the limit of 65536"):
        await run_caller_against(handler, signaling_timeout=4.0)


async def test_silent_peer_times_out() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(3)
        writer.close()

    with pytest.raises(SignalingTimeoutError, match="no answer from"):
        await run_caller_against(handler, signaling_timeout=0.3)


async def test_peer_hanging_up_is_reported() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(10)
        writer.close()

    with pytest.raises(PeerClosedError, match="closed the signaling connection"):
        await run_caller_against(handler)


async def test_wrong_message_kind_rejected() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(10)
        writer.write(encode_message(SignalMessage(SignalKind.OFFER, sdp=SDP)))
        await writer.drain()
        await asyncio.sleep(1)
        writer.close()

    with pytest.raises(SignalingMessageError, match="offer where an answer was expected"):
        await run_caller_against(handler)


async def test_answerer_rejects_bad_offer_and_caller_hears_why() -> None:
    answerer = caller_transport()
    async with (
        await SignalingListener.open(HOST, 0) as listener,
        await connect_signaling(HOST, listener.port, timeout=5) as caller,
    ):
        # A syntactically valid message whose SDP has no DTLS fingerprint.
        await caller.send(SignalMessage(SignalKind.OFFER, sdp=SDP))
        channel = await listener.accept(timeout=5)
        with pytest.raises(SignalingMessageError, match=r"no m-section"):
            await answerer.answer_on(channel)
        with pytest.raises(SignalingRejectedError, match="refused the call: bad offer"):
            await caller.recv((SignalKind.ANSWER,), timeout=5)
    assert answerer.state == "closed"


async def test_accept_timeout() -> None:
    async with await SignalingListener.open(HOST, 0) as listener:
        with pytest.raises(SignalingTimeoutError, match="no caller connected"):
            await listener.accept(timeout=0.2)


async def test_a_reject_reason_is_shown_printable() -> None:
    """A reject comes over unauthenticated signaling: its text reaches no terminal raw."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(10)
        reason = "\x1b[2J\x1b]0;owned\x07busy\r\nfake line"
        writer.write(encode_message(SignalMessage(SignalKind.REJECT, reason=reason)))
        await writer.drain()
        await asyncio.sleep(1)
        writer.close()

    with pytest.raises(SignalingRejectedError) as rejected:
        await run_caller_against(handler)
    text = str(rejected.value)
    assert "\x1b" not in text and "\r" not in text and "\x07" not in text
    assert r"\x1b[2J\x1b]0;owned\x07busy\x0d\x0afake line" in text and "unauthenticated" in text
