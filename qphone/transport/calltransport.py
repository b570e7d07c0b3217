"""CallTransport: qphone's WebRTC transport for opaque protected frames (aiortc 1.16).

One :class:`CallTransport` per call.  It signals directly over TCP
(:mod:`qphone.transport.signaling`), then runs one aiortc ``RTCPeerConnection`` (BUNDLE:
a single ICE/DTLS transport), and composes the parts that use it, each in its own module:

* media (:mod:`qphone.transport.mediapath`): each :meth:`CallTransport.send_frame` payload
  becomes one RTP packet of an Opus/48 kHz audio transceiver (DTLS-SRTP is the hop layer), read
  back *before* aiortc's jitter buffer and decoder (:mod:`qphone.transport.aiortchooks`); or,
  with ``MediaPath.DATACHANNEL``, one message of an unreliable, unordered data channel
  (fallback, and the comparison point of the benchmark);
* received frames (:mod:`qphone.transport.receivedframes`): through an optional
  :class:`~qphone.transport.frames.ReceiveFilter` given by the caller (e.g. a seeded network
  impairment for tests and measurements), counted, to a callback or :meth:`frames`;
* control (:mod:`qphone.transport.controlchannel`): a reliable ordered data channel
  (negotiated id 0) for the handshake/rekey/bye messages of the layer above
  (:meth:`send_control` / :meth:`recv_control`);
* heartbeat (:mod:`qphone.transport.heartbeat`): an unreliable data channel (negotiated id 1)
  whose ping/pong gives an RTT and detects a vanished peer within ``peer_timeout`` seconds;
* statistics (:mod:`qphone.transport.stats`): :meth:`stats` gathers their counters and RTCP.

The peer connection itself, its failure reasons and the DTLS check are
:mod:`qphone.transport.peerconnection`; the answerer's screening of callers is
:func:`qphone.transport.signaling.accept_offer`.  This module sequences the call set-up (offer
and answer, then waiting for the control channel to open) and keeps the transport's lifecycle
(state, close reason, shutdown).

The transport moves bytes and knows nothing about keys.  Every m-section of an offer or answer
must carry the same DTLS fingerprints (else the SDP is refused), and once DTLS is up the peer's
certificate must match all of them; :meth:`channel_binding` is computed from the DTLS session
actually established (both certificates and its RFC 5705 exporter,
:mod:`qphone.core.channelbinding`) for the handshake to authenticate.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription

from qphone.core.channelbinding import CallRole, Fingerprint, FingerprintError
from qphone.core.signalmessage import RejectCode, SignalKind, SignalMessage
from qphone.transport.config import MAX_PAYLOAD_BYTES, MediaPath, TransportConfig
from qphone.transport.controlchannel import ControlChannel
from qphone.transport.errors import TransportClosedError, TransportError
from qphone.transport.frames import ReceivedFrame, ReceiveFilter
from qphone.transport.heartbeat import Heartbeat
from qphone.transport.mediapath import DataChannelMediaPath, MediaPathSender, RtpMediaPath
from qphone.transport.peerconnection import (
    SessionBindingError,
    connection_failure,
    new_peer_connection,
    restrict_candidates,
    session_binding,
    setup_failure,
)
from qphone.transport.receivedframes import ReceivedFrames
from qphone.transport.sdp import checked_fingerprints, has_audio
from qphone.transport.signaling import (
    Refusal,
    SignalingChannel,
    SignalingError,
    SignalingListener,
    SignalingMessageError,
    accept_offer,
    connect_signaling,
)
from qphone.transport.stats import TransportStats, read_rtcp

logger = logging.getLogger(__name__)


class CallTransport:
    """WebRTC transport of one call.  See the module docstring."""

    def __init__(
        self, config: TransportConfig | None = None, receive_filter: ReceiveFilter | None = None
    ) -> None:
        self.config = config or TransportConfig()
        self._role: CallRole | None = None
        self._pc: RTCPeerConnection | None = None
        self._media_path = self.config.media_path
        self._media: MediaPathSender | None = None
        self._local_fps: tuple[Fingerprint, ...] = ()
        self._remote_fps: tuple[Fingerprint, ...] = ()
        self._binding: bytes | None = None
        self._closed = asyncio.Event()
        self._close_reason = ""
        self._heartbeat = Heartbeat(self.config.heartbeat_interval, self.config.peer_timeout)
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._control = ControlChannel(
            self._closed, lambda: self._close_reason, self._heartbeat.heard, self._spawn_shutdown
        )
        self._received = ReceivedFrames(
            self.config.receive_queue_frames, receive_filter, self._heartbeat.heard
        )
        self._background: set[asyncio.Task[None]] = set()
        self._pc_close: asyncio.Task[None] | None = None
        self._frames_sent = 0
        self._bytes_sent = 0
        self._connected = False
        self._listener: SignalingListener | None = None
        self._name = ""
        self.peer_name = ""  # the SAE ID the peer gave in signaling (unauthenticated)

    # ------------------------------------------------------------------ setup

    async def connect_as_caller(
        self, host: str, port: int, caller: str = "", callee: str = "", mode: str = ""
    ) -> None:
        """Call the terminal answering on ``host:port`` and set up the connection.

        ``caller``, ``callee`` and ``mode`` go into the offer (its ``from``, ``to`` and ``mode``:
        unauthenticated hints that let the answerer refuse a wrong call early); the answerer's
        own ``from`` is :attr:`peer_name` afterwards.  Raises a
        :class:`~qphone.transport.signaling.SignalingError` subclass when signaling fails
        (:class:`~qphone.transport.signaling.SignalingRejectedError` with a code when the
        answerer refused) and :class:`TransportError` when ICE/DTLS/SCTP setup fails; the
        transport is closed in both cases.
        """
        self._begin(CallRole.CALLER)
        intro = SignalMessage(
            SignalKind.OFFER, sdp="v=0\r\n", sender=caller, recipient=callee, mode=mode
        )
        await self._guarded(self._call(host, port, intro))

    async def _guarded(self, setup: Coroutine[Any, Any, None]) -> None:
        try:
            await setup
        except BaseException as exc:
            await self._shutdown(f"call setup failed: {exc}")
            raise

    async def _call(self, host: str, port: int, intro: SignalMessage) -> None:
        pc = self._new_peer_connection()
        if self._media_path is MediaPath.RTP:
            rtp = RtpMediaPath(self._received.ingest)
            rtp.attach(pc.addTransceiver(rtp.track, direction="sendrecv"))
            self._media = rtp
        self._create_channels(pc)
        restrict_candidates(pc, self.config)
        await pc.setLocalDescription(await pc.createOffer())
        channel = await connect_signaling(host, port, timeout=self.config.connect_timeout)
        async with channel:
            await channel.send(dataclasses.replace(intro, sdp=pc.localDescription.sdp))
            answer = await channel.recv((SignalKind.ANSWER,), timeout=self.config.signaling_timeout)
            self.peer_name = answer.sender
            try:
                self._remote_fps = checked_fingerprints(answer.sdp)
                await pc.setRemoteDescription(RTCSessionDescription(answer.sdp, "answer"))
            except SignalingError:
                raise
            except FingerprintError as exc:
                raise SignalingMessageError(
                    f"{channel.peer} sent an answer with unusable DTLS fingerprints: {exc}"
                ) from exc
            except Exception as exc:
                raise SignalingMessageError(
                    f"{channel.peer} sent an unusable answer: {exc}"
                ) from exc
        self._local_fps = checked_fingerprints(pc.localDescription.sdp)
        await self._wait_connected()

    async def accept_as_answerer(
        self,
        host: str,
        port: int,
        on_listening: Callable[[SignalingListener], None] | None = None,
        accept_timeout: float | None = None,
        screen: Callable[[SignalMessage], Refusal | None] | None = None,
        name: str = "",
    ) -> None:
        """Listen on ``host:port``, take the first caller and set up the connection.

        ``on_listening`` is called once the socket listens (e.g. to print the port
        when ``port`` is 0).  ``accept_timeout`` None waits for a caller forever.  ``screen``
        sees each caller's offer first: a :class:`Refusal` is sent back to that caller and the
        next one is awaited.  The listener stays open (telling later callers ``busy``; ``name``,
        this terminal's SAE ID, goes into its replies) until the transport is closed.
        """
        listener = await SignalingListener.open(host, port, name)
        self._listener = listener
        self._name = name
        try:
            if on_listening is not None:
                on_listening(listener)
            channel, offer = await accept_offer(
                listener, screen, accept_timeout, self.config.signaling_timeout
            )
            listener.busy = True
        except BaseException:
            await listener.close()
            self._listener = None
            raise
        self.peer_name = offer.sender
        self._begin(CallRole.ANSWERER)
        await self._guarded(self._answer(channel, offer))

    async def answer_on(self, channel: SignalingChannel) -> None:
        """Answer the caller on an accepted signaling connection (errors as for a caller)."""
        self._begin(CallRole.ANSWERER)
        await self._guarded(self._answer(channel))

    async def _answer(self, channel: SignalingChannel, offer: SignalMessage | None = None) -> None:
        async with channel:
            if offer is None:
                offer = await channel.recv(
                    (SignalKind.OFFER,), timeout=self.config.signaling_timeout
                )
            pc = self._new_peer_connection()
            try:
                self._remote_fps = checked_fingerprints(offer.sdp)
                await pc.setRemoteDescription(RTCSessionDescription(offer.sdp, "offer"))
                # The answerer follows the caller's choice of media path.
                self._media_path = MediaPath.RTP if has_audio(offer.sdp) else MediaPath.DATACHANNEL
                if self._media_path is MediaPath.RTP:
                    audio = [t for t in pc.getTransceivers() if t.kind == "audio"]
                    if len(audio) != 1:
                        raise SignalingMessageError("the offer must hold exactly one audio stream")
                    rtp = RtpMediaPath(self._received.ingest)
                    audio[0].sender.replaceTrack(rtp.track)
                    audio[0].direction = "sendrecv"
                    rtp.attach(audio[0])
                    self._media = rtp
            except Exception as exc:
                reason = str(exc)[:400] or type(exc).__name__
                with contextlib.suppress(SignalingError):
                    await channel.send(
                        SignalMessage(
                            SignalKind.REJECT,
                            reason=f"bad offer: {reason}",
                            code=RejectCode.REFUSED,
                            sender=self._name,
                        )
                    )
                if isinstance(exc, SignalingError):
                    raise
                raise SignalingMessageError(
                    f"{channel.peer} sent an unusable offer: {exc}"
                ) from exc
            self._create_channels(pc)
            restrict_candidates(pc, self.config)
            await pc.setLocalDescription(await pc.createAnswer())
            await channel.send(
                SignalMessage(SignalKind.ANSWER, sdp=pc.localDescription.sdp, sender=self._name)
            )
        self._local_fps = checked_fingerprints(pc.localDescription.sdp)
        await self._wait_connected()

    def _begin(self, role: CallRole) -> None:
        if self._role is not None:
            raise TransportError("a CallTransport sets up one call only; make a new one")
        self._role = role

    def _new_peer_connection(self) -> RTCPeerConnection:
        pc = new_peer_connection(self.config)
        pc.on("connectionstatechange", self._on_connection_state)
        self._pc = pc
        return pc

    def _create_channels(self, pc: RTCPeerConnection) -> None:
        self._control.open(pc)
        self._heartbeat.open(pc)
        if self._media_path is MediaPath.DATACHANNEL:
            media = DataChannelMediaPath(self._received.ingest)
            media.open(pc)
            self._media = media

    async def _wait_connected(self) -> None:
        assert self._pc is not None and self._control.channel is not None
        timeout = self.config.connect_timeout
        control = self._control.channel
        opened = asyncio.Event()
        if control.readyState == "open":
            opened.set()
        control.on("open", opened.set)
        closed_wait = asyncio.ensure_future(self._closed.wait())
        open_wait = asyncio.ensure_future(opened.wait())
        try:
            done, _ = await asyncio.wait(
                {closed_wait, open_wait}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            closed_wait.cancel()
            open_wait.cancel()
        if open_wait in done and not self._closed.is_set():
            assert self._role is not None
            try:
                self._binding = session_binding(self._pc, self._role, self._remote_fps)
            except SessionBindingError as exc:
                await self._shutdown(str(exc))
                raise TransportError(f"call setup failed: {exc}") from None
            self._connected = True
            self._heartbeat.heard()
            self._heartbeat_task = asyncio.ensure_future(self._watch_peer())
            return
        reason = self._close_reason or setup_failure(self._pc, timeout)
        await self._shutdown(reason)
        raise TransportError(f"call setup failed: {reason}")

    # ------------------------------------------------------------------ media

    def send_frame(self, payload: bytes, timestamp: int) -> None:
        """Send one protected frame; ``timestamp`` counts 48 kHz samples (wraps mod 2**32)."""
        self._require_open()
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise TypeError("payload must be bytes")
        payload = bytes(payload)
        if not 0 < len(payload) <= MAX_PAYLOAD_BYTES:
            raise ValueError(f"payload must be 1..{MAX_PAYLOAD_BYTES} bytes, got {len(payload)}")
        if not 0 <= timestamp < 1 << 63:
            raise ValueError("timestamp must be a non-negative 63-bit integer")
        assert self._media is not None
        self._media.send(payload, timestamp)
        self._frames_sent += 1
        self._bytes_sent += len(payload)

    def set_frame_callback(self, callback: Callable[[ReceivedFrame], None] | None) -> None:
        """Deliver frames to ``callback`` (called on the event loop) instead of frames()."""
        self._received.set_callback(callback)

    def frames(self) -> AsyncIterator[ReceivedFrame]:
        """Received frames in arrival order; ends when the transport closes."""
        return self._received.frames()

    # ---------------------------------------------------------------- control

    def send_control(self, data: bytes) -> None:
        """Send one message on the reliable ordered control channel."""
        self._require_open()
        self._control.send(data)

    async def recv_control(self, timeout: float | None = None) -> bytes:
        """Next control message; raises TransportClosedError once closed and drained."""
        return await self._control.recv(timeout)

    # ------------------------------------------------------------- liveness

    async def _watch_peer(self) -> None:
        reason = await self._heartbeat.run(self._closed)
        if reason is not None:
            await self._shutdown(reason)

    def _on_connection_state(self) -> None:
        assert self._pc is not None
        reason = connection_failure(self._pc)
        if reason is not None and not self._closed.is_set():
            self._spawn_shutdown(reason)

    def _spawn_shutdown(self, reason: str) -> None:
        if self._closed.is_set():
            return
        task = asyncio.ensure_future(self._shutdown(reason))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------- fingerprints etc

    @property
    def role(self) -> CallRole | None:
        return self._role

    def local_fingerprints(self) -> list[Fingerprint]:
        """Fingerprints of our DTLS certificate (as put in every m-section of our SDP)."""
        return list(self._local_fps)

    def remote_fingerprints(self) -> list[Fingerprint]:
        """The peer's DTLS fingerprints as received over signaling (the same in every m-section;
        the certificate the peer presented in DTLS matched every one of them)."""
        return list(self._remote_fps)

    def channel_binding(self) -> bytes:
        """The binding of the DTLS session established (both certificates and its exporter,
        :func:`qphone.core.channelbinding.binding_for_role`): equal on both ends exactly when
        they share one DTLS session, i.e. when nobody terminates DTLS in between."""
        if self._binding is None:
            raise TransportError("no channel binding: the DTLS session is not established")
        return self._binding

    async def stats(self) -> TransportStats:
        seq = self._received.sequence()
        media = self._media
        sender = media.sender if media is not None and not self._closed.is_set() else None
        rtcp = await read_rtcp(sender)
        return TransportStats(
            state=self.state,
            media_path=self._media_path.value,
            frames_sent=self._frames_sent,
            bytes_sent=self._bytes_sent,
            frames_received=seq.received,
            bytes_received=self._received.bytes_received,
            frames_lost=seq.lost,
            loss_fraction=seq.loss_fraction,
            duplicates=seq.duplicates,
            reordered=seq.reordered,
            frames_overflowed=self._received.overflowed,
            send_queue_dropped=media.dropped if media is not None else 0,
            rtt_s=self._heartbeat.rtt,
            rtcp_rtt_s=rtcp.rtt_s,
            remote_frames_lost=rtcp.frames_lost,
            remote_fraction_lost=rtcp.fraction_lost,
        )

    # ----------------------------------------------------------------- close

    @property
    def state(self) -> str:
        if self._closed.is_set():
            return "closed"
        if self._connected:
            return "connected"
        return "new" if self._pc is None else "connecting"

    @property
    def close_reason(self) -> str:
        return self._close_reason

    async def wait_closed(self) -> str:
        """Wait until the transport closes (peer gone, failure or close()); returns why."""
        await self._closed.wait()
        return self._close_reason

    def _require_open(self) -> None:
        if self._closed.is_set():
            raise TransportClosedError(f"transport closed: {self._close_reason}")
        if not self._connected:
            raise TransportError("transport not connected yet")

    async def close(self) -> None:
        """Close the connection (idempotent).  The layer above sends its bye first."""
        await self._shutdown("closed locally")

    async def _shutdown(self, reason: str) -> None:
        if self._listener is not None:
            listener, self._listener = self._listener, None
            await listener.close()
        if not self._closed.is_set():
            self._close_reason = reason
            self._closed.set()
            logger.info("transport closed: %s", reason)
        self._received.close()
        task = self._heartbeat_task
        if task is not None and task is not asyncio.current_task() and not task.done():
            task.cancel()
        if self._media is not None:
            self._media.close()
        if self._pc is not None:
            # One close for everybody; shielded so that a cancelled waiter cannot
            # cancel aiortc's shared "closed" future under another waiter.
            if self._pc_close is None:
                self._pc_close = asyncio.ensure_future(self._pc.close())
            await asyncio.shield(self._pc_close)
