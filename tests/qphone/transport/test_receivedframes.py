"""ReceivedFrames, the receive side of the media path, without a network: filter, counting,
delivery to a callback or the bounded queue, and nothing after close."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from qphone.transport.frames import RawFrame, ReceivedFrame
from qphone.transport.receivedframes import ReceivedFrames


class HoldingFilter:
    """A ReceiveFilter that holds every frame until released, then delivers them reversed."""

    def __init__(self) -> None:
        self.deliver: Callable[[RawFrame], None] | None = None
        self.held: list[RawFrame] = []
        self.closed = False

    def start(self, deliver: Callable[[RawFrame], None]) -> None:
        self.deliver = deliver

    def offer(self, frame: RawFrame) -> None:
        self.held.append(frame)

    def close(self) -> None:
        self.closed = True

    def release(self) -> None:
        assert self.deliver is not None
        for frame in reversed(self.held):
            self.deliver(frame)
        self.held.clear()


def raw(seq: int) -> RawFrame:
    return RawFrame(bytes([seq]) * 10, seq, seq * 960)


async def drain(received: ReceivedFrames) -> list[ReceivedFrame]:
    return [f async for f in received.frames()]


async def test_queue_keeps_the_newest_frames_and_counts_the_dropped() -> None:
    heard: list[None] = []
    received = ReceivedFrames(3, None, lambda: heard.append(None))
    for seq in range(5):
        received.ingest(raw(seq))
    received.close()
    assert [f.sequence for f in await drain(received)] == [2, 3, 4]
    assert received.overflowed == 2
    assert received.bytes_received == 50 and received.sequence().received == 5
    assert len(heard) == 5


async def test_callback_takes_frames_instead_of_the_queue() -> None:
    received = ReceivedFrames(8, None, lambda: None)
    got: list[ReceivedFrame] = []
    received.set_callback(got.append)
    received.ingest(raw(7))
    assert [(f.payload, f.sequence, f.rtp_timestamp) for f in got] == [(raw(7).payload, 7, 6720)]
    received.close()
    assert await drain(received) == []


async def test_filter_decides_delivery_and_is_closed_with_it() -> None:
    held = HoldingFilter()
    received = ReceivedFrames(8, held, lambda: None)
    for seq in (1, 2, 3):
        received.ingest(raw(seq))
    assert received.sequence().received == 0  # nothing delivered while the filter holds them
    held.release()
    assert received.sequence().reordered > 0
    received.close()
    assert held.closed
    assert [f.sequence for f in await drain(received)] == [3, 2, 1]


async def test_nothing_is_delivered_after_close_but_the_peer_is_still_heard() -> None:
    heard: list[None] = []
    received = ReceivedFrames(8, None, lambda: heard.append(None))
    waiter = asyncio.ensure_future(drain(received))
    await asyncio.sleep(0)
    received.close()
    received.ingest(raw(1))
    assert await asyncio.wait_for(waiter, 5) == []
    assert received.sequence().received == 0 and len(heard) == 1
