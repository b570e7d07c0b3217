"""The two paths a call's protected frames can take over the peer connection.

* :class:`RtpMediaPath` (``MediaPath.RTP``, the default): one Opus/48 kHz audio transceiver;
  each frame sent becomes exactly one RTP packet (:mod:`qphone.transport.payloadtrack`;
  DTLS-SRTP is the hop layer), and each RTP packet received is handed on *before* aiortc's
  jitter buffer and decoder (:func:`qphone.transport.aiortchooks.tap_rtp_receiver`).
* :class:`DataChannelMediaPath` (``MediaPath.DATACHANNEL``, the fallback and the benchmark's
  comparison point): an unreliable, unordered data channel (negotiated id 2,
  ``maxRetransmits=0``); each message is ``sequence (u16) || timestamp (u32, 48 kHz) ||
  payload``.

Both take payloads already checked by the transport and hand every frame received, as a
:class:`~qphone.transport.frames.RawFrame`, to the ``ingest`` function they were made with.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable

from aiortc import RTCDataChannel, RTCPeerConnection, RTCRtpSender, RTCRtpTransceiver
from aiortc.rtp import RtpPacket

from qphone.transport.aiortchooks import tap_rtp_receiver
from qphone.transport.frames import RawFrame
from qphone.transport.payloadtrack import PayloadTrack

logger = logging.getLogger(__name__)

MEDIA_CHANNEL_ID = 2
_DC_MEDIA_HEADER = struct.Struct(">HI")  # data channel media path: sequence, timestamp


class RtpMediaPath:
    """Frames as RTP packets of the call's one audio transceiver."""

    def __init__(self, ingest: Callable[[RawFrame], None]) -> None:
        self._ingest = ingest
        self.track = PayloadTrack()
        """The track the transceiver sends from (added to the offer, or put on the answer's)."""
        self.sender: RTCRtpSender | None = None
        """The transceiver's sender once attached: its RTCP reports feed the statistics."""

    def attach(self, transceiver: RTCRtpTransceiver) -> None:
        """Offer only Opus on ``transceiver`` and tap its receiver for our frames."""
        caps = RTCRtpSender.getCapabilities("audio")
        opus = [c for c in caps.codecs if c.mimeType.lower() == "audio/opus"]
        transceiver.setCodecPreferences(opus)
        self.sender = transceiver.sender
        tap_rtp_receiver(transceiver.receiver, self._on_rtp)

    def send(self, payload: bytes, timestamp: int) -> None:
        self.track.push(payload, timestamp)

    @property
    def dropped(self) -> int:
        """Frames dropped from the send queue because the sender fell behind."""
        return self.track.dropped

    def close(self) -> None:
        self.track.stop()

    def _on_rtp(self, packet: RtpPacket) -> None:
        self._ingest(RawFrame(packet.payload, packet.sequence_number, packet.timestamp))


class DataChannelMediaPath:
    """Frames as messages of an unreliable, unordered data channel with a 6-byte header."""

    sender: RTCRtpSender | None = None  # no RTP, so no RTCP reports
    dropped = 0  # data channel messages are sent at once, never queued by us

    def __init__(self, ingest: Callable[[RawFrame], None]) -> None:
        self._ingest = ingest
        self._channel: RTCDataChannel | None = None
        self._seq = 0

    def open(self, pc: RTCPeerConnection) -> RTCDataChannel:
        """Create the media data channel on ``pc`` (both ends, negotiated id 2)."""
        self._channel = pc.createDataChannel(
            "qphone-media",
            negotiated=True,
            id=MEDIA_CHANNEL_ID,
            ordered=False,
            maxRetransmits=0,
        )
        self._channel.on("message", self._on_message)
        return self._channel

    def send(self, payload: bytes, timestamp: int) -> None:
        assert self._channel is not None
        header = _DC_MEDIA_HEADER.pack(self._seq, timestamp & 0xFFFFFFFF)
        self._seq = (self._seq + 1) & 0xFFFF
        self._channel.send(header + payload)

    def close(self) -> None:
        """Nothing to stop: the channel closes with the peer connection."""

    def _on_message(self, message: bytes | str) -> None:
        if not isinstance(message, bytes) or len(message) <= _DC_MEDIA_HEADER.size:
            logger.debug("dropping malformed media data channel message")
            return
        seq, ts = _DC_MEDIA_HEADER.unpack_from(message)
        self._ingest(RawFrame(message[_DC_MEDIA_HEADER.size :], seq, ts))


MediaPathSender = RtpMediaPath | DataChannelMediaPath
