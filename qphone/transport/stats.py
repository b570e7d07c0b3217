"""Counters of one call's transport, as :meth:`CallTransport.stats` reports them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TransportStats:
    state: str
    media_path: str
    frames_sent: int
    bytes_sent: int
    frames_received: int
    bytes_received: int
    frames_lost: int
    loss_fraction: float
    duplicates: int
    reordered: int
    frames_overflowed: int
    """Received frames dropped because nobody consumed frames() fast enough."""
    send_queue_dropped: int
    rtt_s: float | None
    """Round-trip time from heartbeat ping/pong on the data channel (smoothed)."""
    rtcp_rtt_s: float | None
    """Round-trip time aiortc derived from RTCP SR/RR (RTP path, after a few seconds)."""
    remote_frames_lost: int | None
    """Loss of our stream as reported by the peer's RTCP receiver reports."""
    remote_fraction_lost: float | None
