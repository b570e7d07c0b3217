"""Frames on the module pair's streams: ``u32 length (big-endian) || bytes``, bounded."""

from __future__ import annotations

import asyncio
import struct

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
