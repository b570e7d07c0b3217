"""What an endpoint tells an observer about its media, for measurement (``qphone loopback``).

The endpoint calls a :class:`CallObserver` (when one is given; none on a normal call) from its
send path for every frame handed to the transport, from its receive path for every frame that
was unprotected, when a key epoch starts in either direction, and for every slot played out.
:class:`qphone.measure.callrecorder.CallRecorder` is the implementation that records them all.
Observers run on the event loop in the media paths: they must be quick and must not raise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from qphone.endpoint.playout import PlayoutSlot


@dataclass(frozen=True)
class SentFrame:
    """One frame handed to the transport."""

    index: int  # frame number in the stream (frames dropped for want of key count too)
    timestamp: int  # our RTP timestamp (48 kHz), before aiortc adds its random offset
    captured: float  # monotonic time the frame was complete (its first sample: frame_ms earlier)
    sent: float  # handed to the transport
    encode_s: float
    protect_s: float
    qkd_bits: int  # QKD bits this endpoint had consumed when the frame was sent
    packet: bytes = field(repr=False)  # the Opus packet (before protection)
    qkd_fetched: int = 0  # QKD bits this endpoint had taken from its KME by then


@dataclass(frozen=True)
class ReceivedPayload:
    """One received frame after unprotect, before the jitter buffer."""

    rtp_timestamp: int  # as received (sender's timestamp + aiortc's random offset)
    sequence: int
    arrival: float
    unprotect_s: float
    packet: bytes = field(repr=False)  # the Opus packet after unprotect


@dataclass(frozen=True)
class EpochChange:
    """A key epoch started: for sending (the sender switched) or for receiving (first frame)."""

    at: float
    sending: bool
    epoch: int


class CallObserver(Protocol):
    def on_sent(self, frame: SentFrame) -> None: ...

    def on_received(self, frame: ReceivedPayload) -> None: ...

    def on_epoch(self, change: EpochChange) -> None: ...

    def on_playout(self, slot: PlayoutSlot) -> None: ...
