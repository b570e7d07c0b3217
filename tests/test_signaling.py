"""Signaling: message codec (strict, bounded) and real TCP connections on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qphone.core.signalmessage import (
    MAX_MESSAGE_BYTES,
    SignalingProtocolError,
    SignalKind,
    SignalMessage,
    decode_body,
    decode_length,
    encode_message,
)
from qphone.mediatransport import LOOPBACK_ADDRESSES, CallTransport, TransportConfig
from qphone.signaling import (
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

# ------------------------------------------------------------------- codec

sdp_text = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
    max_size=500,
).map(lambda s: "v=0\r\n" + s)


@given(sdp=sdp_text, kind=st.sampled_from([SignalKind.OFFER, SignalKind.ANSWER]))
def test_round_trip(sdp: str, kind: SignalKind) -> None:
    wire = encode_message(SignalMessage(kind, sdp=sdp))
    length = decode_length(wire[:4])
    assert length == len(wire) - 4
    assert decode_body(wire[4:]) == SignalMessage(kind, sdp=sdp)


@given(reason=st.text(max_size=500))
def test_reject_round_trip(reason: str) -> None:
    wire = encode_message(SignalMessage(SignalKind.REJECT, reason=reason))
    assert decode_body(wire[4:]).reason == reason


@given(body=st.binary(max_size=2000))
def test_arbitrary_bytes_only_raise_protocol_error(body: bytes) -> None:
    with contextlib.suppress(SignalingProtocolError):
        decode_body(body)


@given(
    obj=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda kids: (
            st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_arbitrary_json_only_raises_protocol_error(obj: object) -> None:
    with contextlib.suppress(SignalingProtocolError):
        decode_body(json.dumps(obj).encode())


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"\xff\xfe", "not UTF-8"),
        (b"not json", "not valid JSON"),
        (b"[1,2]", "not a JSON object"),
        (b'{"type":"offer","sdp":"v=0\\r\\n"}', "version"),
        (b'{"qphone":2,"type":"offer","sdp":"v=0\\r\\n"}', "version 2"),
        (b'{"qphone":true,"type":"offer","sdp":"v=0\\r\\n"}', "version"),
        (b'{"qphone":1,"type":"hello","sdp":"v=0\\r\\n"}', "unknown signaling message type"),
        (b'{"qphone":1,"type":"offer","sdp":"v=0\\r\\n","x":1}', "wrong fields"),
        (b'{"qphone":1,"type":"offer"}', "wrong fields"),
        (b'{"qphone":1,"type":"offer","sdp":5}', "must be a string"),
        (b'{"qphone":1,"type":"offer","sdp":"hello"}', "v=0"),
        (b'{"qphone":1,"type":"offer","sdp":"v=0\\r\\n","sdp":"v=0\\r\\n"}', "duplicate key"),
        (b'{"qphone":1,"type":"offer","sdp":NaN}', "non-standard"),
    ],
)
def test_malformed_bodies_rejected(body: bytes, match: str) -> None:
    with pytest.raises(SignalingProtocolError, match=match):
        decode_body(body)


def test_length_limits() -> None:
    with pytest.raises(SignalingProtocolError, match="exceeds the limit"):
        decode_length(struct.pack(">I", MAX_MESSAGE_BYTES + 1))
    with pytest.raises(SignalingProtocolError, match="empty"):
        decode_length(b"\0\0\0\0")
    with pytest.raises(SignalingProtocolError):
        decode_length(b"\0\0")
    assert decode_length(struct.pack(">I", MAX_MESSAGE_BYTES)) == MAX_MESSAGE_BYTES
    with pytest.raises(SignalingProtocolError):
        encode_message(SignalMessage(SignalKind.OFFER, sdp="v=0\r\n" + "a" * MAX_MESSAGE_BYTES))


# ------------------------------------------------------------- real TCP


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


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


async def test_connection_refused_names_the_fix() -> None:
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
        with pytest.raises(SignalingMessageError, match="no sha-256 DTLS fingerprint"):
            await answerer.answer_on(channel)
        with pytest.raises(SignalingRejectedError, match="refused the call: bad offer"):
            await caller.recv((SignalKind.ANSWER,), timeout=5)
    assert answerer.state == "closed"


async def test_accept_timeout() -> None:
    async with await SignalingListener.open(HOST, 0) as listener:
        with pytest.raises(SignalingTimeoutError, match="no caller connected"):
            await listener.accept(timeout=0.2)
