"""Frames on the module pair's streams: ``u32 length (big-endian) || bytes``, bounded."""

from __future__ import annotations

import asyncio
import os
import struct

from keyserver.qkd.sealedchannel import (
    NONCE_BYTES,
    TO_RECEIVER,
    TO_TRANSMITTER,
    ChannelOpener,
    ChannelSealer,
    session_key,
)

_LEN = struct.Struct(">I")
MAX_WIRE_FRAME = 100 << 20


def length_prefixed(data: bytes | bytearray) -> bytes:
    return _LEN.pack(len(data)) + bytes(data)


class SessionClosed(Exception):
    """The session ended (peer gone, bad handshake, protocol error)."""


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    try:
        head = await reader.readexactly(_LEN.size)
        (length,) = _LEN.unpack(head)
        if length > MAX_WIRE_FRAME:
            raise SessionClosed(f"frame of {length} bytes is over the limit")
        return await reader.readexactly(length)
    except (asyncio.IncompleteReadError, ConnectionError) as e:
        raise SessionClosed("connection closed") from e


async def open_sealed_channel(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    channel_key: bytes | bytearray,
    link: str,
    transmitter: bool,
    timeout: float,
) -> tuple[ChannelSealer, ChannelOpener]:
    """Exchange the connection nonces of the sealed quantum channel and derive its session key
    (:mod:`keyserver.qkd.sealedchannel`); the transmitter seals, the receiver opens, frames
    towards the receiver (the other direction is available for replies)."""
    mine = os.urandom(NONCE_BYTES)
    writer.write(mine)
    try:
        async with asyncio.timeout(timeout):
            theirs = await reader.readexactly(NONCE_BYTES)
    except (TimeoutError, asyncio.IncompleteReadError, ConnectionError) as e:
        raise SessionClosed("no quantum-channel handshake") from e
    tx, rx = (mine, theirs) if transmitter else (theirs, mine)
    key = session_key(channel_key, link, tx, rx)
    out = TO_RECEIVER if transmitter else TO_TRANSMITTER
    return ChannelSealer(key, out), ChannelOpener(key, 1 - out)
