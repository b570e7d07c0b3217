"""The data channel media path's framing, without a network: a message is sequence (u16) ||
timestamp (u32) || payload; anything no longer than the header, or text, is dropped."""

from __future__ import annotations

import struct

from aiortc import RTCPeerConnection

from qphone.transport.frames import RawFrame
from qphone.transport.mediapath import MEDIA_CHANNEL_ID, DataChannelMediaPath


async def test_data_channel_messages_become_raw_frames_and_malformed_ones_are_dropped() -> None:
    got: list[RawFrame] = []
    pc = RTCPeerConnection()
    try:
        channel = DataChannelMediaPath(got.append).open(pc)
        assert channel.id == MEDIA_CHANNEL_ID and not channel.ordered
        assert channel.maxRetransmits == 0
        header = struct.pack(">HI", 65535, 0xFFFFFFFF)
        for message in (header + b"frame", header, b"\x00" * 5, "text" * 10):
            channel.emit("message", message)
        assert got == [RawFrame(b"frame", 65535, 0xFFFFFFFF)]
    finally:
        await pc.close()
