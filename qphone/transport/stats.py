"""Statistics of one call's transport, as :meth:`CallTransport.stats` reports them.

:class:`TransportStats` gathers the counters of the media paths, the received frames and the
heartbeat; :func:`read_rtcp` reads what aiortc derived from RTCP (RFC 3550 sender and receiver
reports) on the RTP path: the round-trip time and the loss of our stream the peer reported.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiortc import RTCRtpSender


@dataclass(frozen=True)
class RtcpFigures:
    """What the peer's RTCP receiver reports say (None: no report yet, or no RTP path)."""

    rtt_s: float | None = None
    frames_lost: int | None = None
    fraction_lost: float | None = None


async def read_rtcp(sender: RTCRtpSender | None) -> RtcpFigures:
    """The latest ``remote-inbound-rtp`` figures of ``sender`` (empty without a sender)."""
    if sender is None:
        return RtcpFigures()
    figures = RtcpFigures()
    report = await sender.getStats()
    for item in report.values():
        if getattr(item, "type", "") == "remote-inbound-rtp":
            figures = RtcpFigures(
                item.roundTripTime, int(item.packetsLost), float(item.fractionLost) / 256.0
            )
    return figures


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
