"""Fail loudly if aiortc/aioice change under qphone's hooks (qphone/transport/aiortchooks.py).

qphone relies on these exact private internals of aiortc 1.16.0 and aioice
0.13.0.  If one of these tests fails after an upgrade, re-read the new code of
the named function, adapt qphone/transport/aiortchooks.py, then update the pins.
"""

from __future__ import annotations

import inspect
from importlib.metadata import version

import aioice
import aiortc
import av
from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc.codecs.opus import OpusEncoder
from aiortc.rtcdtlstransport import X509_DIGEST_ALGORITHMS, RTCCertificate, RTCDtlsTransport
from aiortc.rtcicetransport import RTCIceGatherer
from OpenSSL import SSL

from qphone.core.channelbinding import DIGEST_BYTES
from qphone.transport.payloadtrack import TIME_BASE


def params(func: object) -> list[str]:
    return list(inspect.signature(func).parameters)  # type: ignore[arg-type]


def source(func: object) -> str:
    return inspect.getsource(func)  # type: ignore[arg-type]


def test_versions_are_pinned() -> None:
    assert version("aiortc") == "1.16.0"
    assert aiortc.__version__ == "1.16.0"
    assert version("aioice") == "0.13.0"


def test_receiver_rtp_handler_signature_and_dispatch() -> None:
    # We wrap this on the instance; the DTLS transport must look it up per packet.
    assert params(RTCRtpReceiver._handle_rtp_packet) == ["self", "packet", "arrival_time_ms"]
    assert inspect.iscoroutinefunction(RTCRtpReceiver._handle_rtp_packet)
    dispatch = source(RTCDtlsTransport._handle_rtp_data)
    assert "receiver._handle_rtp_packet(packet, arrival_time_ms=arrival_time_ms)" in dispatch


def test_receiver_decoder_is_skipped_without_thread() -> None:
    handler = source(RTCRtpReceiver._handle_rtp_packet)
    assert "if encoded_frame is not None and self.__decoder_thread:" in handler
    assert "self.__decoder_queue.put((codec, encoded_frame))" in handler
    # receive() starts the thread, _handle_disconnect() stops it and clears it.
    assert params(RTCRtpReceiver.receive) == ["self", "parameters"]
    assert "self.__decoder_thread.start()" in source(RTCRtpReceiver.receive)
    assert params(RTCRtpReceiver._handle_disconnect) == ["self"]
    assert "self.__stop_decoder()" in source(RTCRtpReceiver._handle_disconnect)
    stop = source(RTCRtpReceiver._RTCRtpReceiver__stop_decoder)  # type: ignore[attr-defined]
    assert "self.__decoder_thread = None" in stop


def test_sender_packs_av_packets_without_reencoding() -> None:
    frame_source = source(RTCRtpSender._next_encoded_frame)
    assert "if isinstance(data, Frame):" in frame_source
    assert "self.__encoder.pack(data)" in frame_source
    payload = bytes(range(256)) * 3
    packet = av.Packet(payload)
    packet.pts = 123_456
    packet.time_base = TIME_BASE
    payloads, timestamp = OpusEncoder().pack(packet)
    assert payloads == [payload]
    assert timestamp == 123_456


def test_ice_gatherer_exposes_aioice_connection() -> None:
    gatherer = RTCIceGatherer(iceServers=[])
    assert isinstance(gatherer._connection, aioice.Connection)
    assert params(aioice.Connection.get_component_candidates) == [
        "self",
        "component",
        "addresses",
        "timeout",
    ]
    gather = source(aioice.Connection.gather_candidates)
    assert "self.get_component_candidates(component=component, addresses=addresses)" in gather


def test_dtls_session_is_read_from_ssl_after_start() -> None:
    # qphone.transport.aiortchooks.dtls_session reads RTCDtlsTransport._ssl once connected.
    start = source(RTCDtlsTransport.start)
    assert "self._ssl = SSL.Connection(" in start
    assert start.index("self._validate_peer_identity(remoteParameters)") < start.index(
        "self._set_state(State.CONNECTED)"
    )
    assert "self._ssl: Optional[SSL.Connection] = None" in source(RTCDtlsTransport.__init__)
    assert params(SSL.Connection.get_certificate) == ["self", "as_cryptography"]
    assert params(SSL.Connection.get_peer_certificate) == ["self", "as_cryptography"]
    assert params(SSL.Connection.export_keying_material) == ["self", "label", "olen", "context"]


def test_dtls_checks_all_supported_prints_of_the_first_bundled_section_only() -> None:
    # Why qphone checks every m-section itself (qphone.transport.sdp.checked_fingerprints) and
    # the peer certificate against all of them: aiortc validates only the fingerprints of the
    # section whose transport it starts (the first bundled one), for these algorithms.
    validate = source(RTCDtlsTransport._validate_peer_identity)
    assert "if algorithm in X509_DIGEST_ALGORITHMS:" in validate
    assert "fingerprint_valid != fingerprint_supported" in validate
    assert set(X509_DIGEST_ALGORITHMS) == set(DIGEST_BYTES)
    offered = {f.algorithm for f in RTCCertificate.generateCertificate().getFingerprints()}
    assert offered == set(DIGEST_BYTES)
