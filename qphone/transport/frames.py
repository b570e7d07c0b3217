"""Received media frames, and the receive filter seam between the network and their delivery.

A :class:`ReceiveFilter` (for example the seeded network impairment of ``qphone loopback`` and
of the CLI's test options, :class:`qphone.measure.impairmentfilter.ImpairmentFilter`) is given
to :class:`~qphone.transport.calltransport.CallTransport` by whoever wants one: every
:class:`RawFrame` that arrives goes through it, and it hands on (later, fewer, more or
reordered) frames to the ``deliver`` function the transport started it with.  Without a filter
frames are delivered as they arrive.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class RawFrame:
    """One media payload as it came off the network (RTP or data channel)."""

    payload: bytes
    sequence: int
    """16-bit sequence number (RTP, or the data channel path's own header)."""
    timestamp: int
    """32-bit timestamp (48 kHz): the sender's timestamp plus aiortc's random offset."""


@dataclass(frozen=True)
class ReceivedFrame:
    """One media payload as it left the network, before any jitter buffering."""

    payload: bytes
    sequence: int
    """RTP sequence number (16 bit) of the packet."""
    rtp_timestamp: int
    """RTP timestamp (32 bit, 48 kHz): the sender's timestamp plus a random offset."""
    arrival: float
    """``time.monotonic()`` when the frame was handed to us (after the receive filter, if any)."""


class ReceiveFilter(Protocol):
    """Sits on a transport's receive path; runs on the event loop."""

    def start(self, deliver: Callable[[RawFrame], None]) -> None:
        """Called once by the transport: ``deliver`` hands a frame on to the transport."""

    def offer(self, frame: RawFrame) -> None:
        """A frame arrived from the network."""

    def close(self) -> None:
        """The transport closed: deliver nothing more."""
