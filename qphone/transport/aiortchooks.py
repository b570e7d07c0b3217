"""The only places where qphone reaches into private aiortc / aioice internals.

aiortc has no public way to (a) read RTP payloads before its own jitter buffer
and decoder, (b) restrict ICE host candidates to chosen addresses, or (c) read the
DTLS session it established (certificates, keying-material exporter).  The hooks
patch a single *instance* (never a class or a module) or only read, and every private
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

DTLS session (:func:`dtls_session`), read only, after the transport is connected:
  * ``RTCDtlsTransport._ssl`` is the pyOpenSSL ``SSL.Connection`` of the DTLS
    session (set in ``start()``; aiortc itself reads the peer certificate and
    exports the SRTP keys from it);
  * ``_ssl.get_certificate(as_cryptography=True)`` /
    ``get_peer_certificate(as_cryptography=True)``: the local certificate and the
    one the peer presented in the handshake;
  * ``_ssl.export_keying_material(label, length, context)``: RFC 5705.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aioice import Candidate
from aiortc import RTCDtlsTransport, RTCPeerConnection, RTCRtpReceiver
from aiortc.rtp import RtpPacket
from cryptography.hazmat.primitives.serialization import Encoding

from qphone.core.channelbinding import (
    EXPORTER_BYTES,
    EXPORTER_CONTEXT,
    EXPORTER_LABEL,
    DtlsSession,
)

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


class DtlsSessionUnavailable(Exception):
    """The peer connection has no single connected DTLS session to read."""


def dtls_transports(pc: RTCPeerConnection) -> list[RTCDtlsTransport]:
    """The distinct DTLS transports of ``pc`` (one with BUNDLE)."""
    transports: list[RTCDtlsTransport] = []
    for transceiver in pc.getTransceivers():
        dtls = transceiver.receiver.transport
        if dtls not in transports:
            transports.append(dtls)
    if pc.sctp is not None and pc.sctp.transport not in transports:
        transports.append(pc.sctp.transport)
    return transports


def dtls_session(pc: RTCPeerConnection) -> DtlsSession:
    """The certificates and the RFC 9266 exporter of the one DTLS session ``pc`` runs."""
    transports = dtls_transports(pc)
    if len(transports) != 1:
        raise DtlsSessionUnavailable(
            f"expected one bundled DTLS transport, found {len(transports)}"
        )
    dtls = transports[0]
    ssl = dtls._ssl
    if dtls.state != "connected" or ssl is None:
        raise DtlsSessionUnavailable(f"the DTLS transport is {dtls.state}, not connected")
    local = ssl.get_certificate(as_cryptography=True)
    peer = ssl.get_peer_certificate(as_cryptography=True)
    if local is None or peer is None:
        raise DtlsSessionUnavailable("the DTLS session has no local or no peer certificate")
    exporter = ssl.export_keying_material(EXPORTER_LABEL, EXPORTER_BYTES, EXPORTER_CONTEXT)
    return DtlsSession(local.public_bytes(Encoding.DER), peer.public_bytes(Encoding.DER), exporter)
