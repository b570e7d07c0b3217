"""The only places where qphone reaches into private aiortc / aioice internals.

aiortc has no public way to (a) read RTP payloads before its own jitter buffer
and decoder, or (b) restrict ICE host candidates to chosen addresses.  Both
hooks patch a single *instance* (never a class or a module), and every private
name used here is asserted by ``tests/qphone/transport/test_aiortc_pin.py`` against the pinned
``aiortc==1.16.0`` / ``aioice==0.13.0`` so that an upgrade fails loudly.

Receive tap (:func:`tap_rtp_receiver`):
  * ``RTCRtpReceiver._handle_rtp_packet(packet, arrival_time_ms)`` is wrapped
    on the instance: our callback gets the raw (SRTP-decrypted) RTP packet
    first, then aiortc's original handler runs so that its RTCP receiver
    reports (loss, jitter, LSR/DLSR for the peer's RTT) stay correct.
  * ``RTCRtpReceiver.receive()`` is wrapped so that, right after aiortc starts
    its decoder thread, ``_handle_disconnect()`` stops it again.  The original
    handler only queues frames for decoding while that thread exists, so our
    opaque (non-Opus) payloads never reach libopus.

Candidate restriction (:func:`restrict_host_candidates`):
  * ``aioice.Connection.get_component_candidates(component, addresses, timeout)``
    is wrapped on the instance to replace the address list aioice found by
    enumerating interfaces (which always excludes 127.0.0.1) with ours.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aioice import Candidate
from aiortc import RTCPeerConnection, RTCRtpReceiver
from aiortc.rtp import RtpPacket

RtpCallback = Callable[[RtpPacket], None]


def tap_rtp_receiver(receiver: RTCRtpReceiver, on_packet: RtpCallback) -> None:
    """Deliver each incoming RTP packet of ``receiver`` to ``on_packet``; disable decoding."""
    original_handle: Callable[[RtpPacket, int], Awaitable[None]] = receiver._handle_rtp_packet
    original_receive: Callable[[Any], Awaitable[None]] = receiver.receive

    async def handle_rtp_packet(packet: RtpPacket, arrival_time_ms: int) -> None:
        on_packet(packet)
        await original_handle(packet, arrival_time_ms)

    async def receive(parameters: Any) -> None:
        await original_receive(parameters)
        # Stops the decoder thread started by receive(); with no decoder thread
        # the original _handle_rtp_packet never queues frames for decoding.
        receiver._handle_disconnect()

    receiver._handle_rtp_packet = handle_rtp_packet  # type: ignore[method-assign]
    receiver.receive = receive  # type: ignore[method-assign]


def decoder_running(receiver: RTCRtpReceiver) -> bool:
    """Whether aiortc's decoder thread of ``receiver`` exists (for tests and diagnostics)."""
    return getattr(receiver, "_RTCRtpReceiver__decoder_thread", None) is not None


def restrict_host_candidates(pc: RTCPeerConnection, addresses: Sequence[str]) -> None:
    """Gather ICE host candidates of every transport of ``pc`` on ``addresses`` only.

    Call after all transceivers/data channels exist and before setLocalDescription().
    """
    allowed = list(addresses)
    for ice_transport in _ice_transports(pc):
        connection = ice_transport.iceGatherer._connection
        original = connection.get_component_candidates

        async def get_component_candidates(
            component: int,
            addresses: list[str],
            timeout: int = 5,
            _original: Callable[..., Awaitable[list[Candidate]]] = original,
        ) -> list[Candidate]:
            return await _original(component=component, addresses=allowed, timeout=timeout)

        connection.get_component_candidates = get_component_candidates


def _ice_transports(pc: RTCPeerConnection) -> list[Any]:
    transports: list[Any] = []
    for transceiver in pc.getTransceivers():
        ice = transceiver.receiver.transport.transport
        if ice not in transports:
            transports.append(ice)
    if pc.sctp is not None and pc.sctp.transport.transport not in transports:
        transports.append(pc.sctp.transport.transport)
    return transports
