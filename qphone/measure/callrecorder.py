"""Records everything an endpoint reports to its observer, for the loopback report and the bench.

A :class:`CallRecorder` is a :class:`~qphone.endpoint.observer.CallObserver`: give one to each
:class:`~qphone.endpoint.endpoint.CallEndpoint` of a measured call and read its lists afterwards.
"""

from __future__ import annotations

from qphone.endpoint.observer import EpochChange, ReceivedPayload, SentFrame
from qphone.endpoint.playout import PlayoutSlot

KEY_SAMPLE_FRAMES = 5  # the key consumed is sampled every this many frames


class CallRecorder:
    def __init__(self) -> None:
        self.sent: list[SentFrame] = []
        self.received: list[ReceivedPayload] = []
        self.epochs: list[EpochChange] = []
        self.played: list[PlayoutSlot] = []
        self.key_log: list[tuple[float, int]] = []
        """(time, QKD bits this end had consumed), every KEY_SAMPLE_FRAMES-th frame sent."""
        self.drawn_log: list[tuple[float, int]] = []
        """(time, QKD bits this end had taken from its KME), sampled likewise."""

    def on_sent(self, frame: SentFrame) -> None:
        self.sent.append(frame)
        if frame.index % KEY_SAMPLE_FRAMES == 0:
            self.key_log.append((frame.captured, frame.qkd_bits))
            self.drawn_log.append((frame.captured, frame.qkd_fetched))

    def on_received(self, frame: ReceivedPayload) -> None:
        self.received.append(frame)

    def on_epoch(self, change: EpochChange) -> None:
        self.epochs.append(change)

    def on_playout(self, slot: PlayoutSlot) -> None:
        self.played.append(slot)

    @property
    def send_log(self) -> list[tuple[int, float]]:
        """(frame timestamp, time the frame was complete) of every frame sent."""
        return [(f.timestamp, f.captured) for f in self.sent]

    @property
    def playout_log(self) -> list[tuple[int, float, str]]:
        """(slot timestamp, playout time, kind) of every slot played."""
        return [(p.timestamp, p.played, p.kind.value) for p in self.played]
