"""A call endpoint: signaling + WebRTC transport, hybrid handshake, keys from the KME, media.

Thin asyncio adapter around the sans-I/O core: it moves bytes between the transport, the KME
client, the audio devices or WAV files and the core objects (handshake, call session, jitter
buffer), and shows what happens.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

from qphone.audio.opus import OpusConfig, OpusEncoder
from qphone.audio.streams import (
    AudioSink,
    AudioSource,
    NullSink,
    Playout,
    SilenceSource,
    WavSink,
    WavSource,
    level_dbfs,
)
from qphone.config.identityfile import load_or_create_identity
from qphone.config.pins import KnownPeers, PinStatus
from qphone.core.callparams import CallParams, Mode
from qphone.core.errors import (
    ControlRejected,
    FrameRejected,
    HandshakeFailed,
    KeyExhausted,
    QphoneError,
)
from qphone.core.handshake import (
    HandshakeComplete,
    HandshakeResult,
    Initiator,
    NeedQkdKeys,
    Responder,
    ResponderPolicy,
    Role,
    SendMessage,
)
from qphone.core.identity import PublicIdentity
from qphone.core.keyschedule import Direction
from qphone.core.qkd import QkdKey
from qphone.core.session import (
    CallSession,
    EpochStarted,
    FetchQkdKeys,
    PeerBye,
    ResolveQkdKeys,
    RotationOverdue,
    SendControl,
)
from qphone.endpoint.keysupply import retry_out_of_keys
from qphone.kmeclient import KmeClient, KmeError
from qphone.profile import Profile
from qphone.transport.calltransport import (
    CallTransport,
    ReceivedFrame,
    TransportConfig,
    TransportError,
)

log = logging.getLogger(__name__)

ABORT = b"\xffqphone-abort:"  # unauthenticated courtesy message: "I am failing the handshake"
HANDSHAKE_TIMEOUT = 15.0
DRAIN_S = 0.15  # after the last frame is sent, before the bye
PAD_WARN_S = 3.0  # OTP: warn when the pad held covers less talk time than this
EARLY_FRAMES = 100  # frames kept that arrive before our side of the handshake is complete


class TextOut(Protocol):
    """Where an endpoint writes its messages and status line (stderr by default)."""

    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...

    def isatty(self) -> bool: ...


class CallFailed(Exception):
    """The call could not be set up or was ended by a failure; the message names the fix."""


@dataclass
class CallOptions:
    mode: Mode | None = None  # caller: proposed (default aes); answerer: required (None = any)
    bitrate: int = 24_000
    frame_ms: int = 20
    bandwidth: str = "wb"
    fec: bool = True
    dtx: bool = False
    rotate_frames: int = 500
    rotate_seconds: float = 10.0
    otp_tag_bits: int = 64
    pad_block_bits: int = 65_536
    input: str | None = None  # WAV path, sound device (name/index, "device:" prefix), None=silence
    output: str | None = None  # WAV path, sound device, None = discard
    duration: float | None = None
    allow_pqc_only: bool = False
    trust_new_identity: bool = False
    status: bool | None = None  # None: live status line when stderr is a terminal
    transport: TransportConfig = field(default_factory=TransportConfig)
    log_playout: bool = False
    kme_wait: float = 10.0  # seconds to wait for key when the KME's pool is empty

    def opus(self) -> OpusConfig:
        return OpusConfig(
            frame_ms=self.frame_ms,
            bitrate=self.bitrate,
            bandwidth=self.bandwidth,  # type: ignore[arg-type]
            fec=self.fec,
            dtx=self.dtx,
        )

    def call_params(self, pqc_only: bool = False) -> CallParams:
        return CallParams(
            mode=self.mode or Mode.AES,
            rotate_frames=self.rotate_frames,
            rotate_ms=int(self.rotate_seconds * 1000),
            otp_tag_bits=self.otp_tag_bits,
            pad_block_bits=self.pad_block_bits,
            pqc_only=pqc_only,
            handshake_qkd_bits=0 if pqc_only else 256,
        )


@dataclass
class CallState:
    phase: str = "starting"
    sas: str = ""
    started: float = 0.0
    frames_sent: int = 0
    frames_received: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    input_level: float = -120.0
    epochs_tx: list[int] = field(default_factory=list)
    epochs_rx: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    end_reason: str = ""
    input_ended: bool = False
    payload_bytes_sent: int = 0
    frames_unsent: int = 0  # dropped at the sender for want of fresh key (never reused)
    protect_seconds: float = 0.0
    unprotect_seconds: float = 0.0
    encode_seconds: float = 0.0


@dataclass(frozen=True)
class SentFrame:
    timestamp: int  # our RTP timestamp (48 kHz), before aiortc adds its random offset
    captured: float  # monotonic time the frame was complete (its first sample: frame_ms earlier)
    sent: float  # handed to the transport
    encode_s: float
    protect_s: float
    packet: bytes  # the Opus packet (before protection)


@dataclass(frozen=True)
class ReceivedRecord:
    rtp_timestamp: int  # as received (sender's timestamp + aiortc's random offset)
    sequence: int
    arrival: float
    unprotect_s: float
    packet: bytes  # the Opus packet after unprotect


def _is_wav(spec: str) -> bool:
    return spec.lower().endswith(".wav")


class CallEndpoint:
    """One side of a call. Use :meth:`call` or :meth:`answer`; both return the summary dict."""

    def __init__(self, profile: Profile, options: CallOptions, out: TextOut | None = None) -> None:
        self.profile = profile
        self.opt = options
        self.out = out or sys.stderr
        self.state = CallState()
        self.identity, self.identity_created = load_or_create_identity(profile.identity_file)
        self.kme = KmeClient.from_profile(profile)
        self.transport = CallTransport(options.transport)
        self.session: CallSession | None = None
        self.result: HandshakeResult | None = None
        self.playout = Playout(options.opus(), log_slots=options.log_playout)
        self.encoder = OpusEncoder(options.opus())
        self.pqc_only = False
        self.pin_status = ""
        self.timings: dict[str, float] = {}
        # with log_playout (measurement runs such as `qphone loopback`):
        self.send_log: list[tuple[int, float]] = []  # (frame timestamp, capture time)
        self.sent_frames: list[SentFrame] = []
        self.recv_log: list[ReceivedRecord] = []
        self.key_log: list[tuple[float, int]] = []  # (time, QKD bits consumed by this end)
        self.epoch_log: list[tuple[float, str, int]] = []  # (time, "tx"/"rx", epoch)
        self._stop = asyncio.Event()
        self._on_listening: Any = None
        self._early: collections.deque[ReceivedFrame] = collections.deque(maxlen=EARLY_FRAMES)
        self._accept_timeout: float | None = None
        self._supply: Any = None
        self._status_live = options.status if options.status is not None else self.out.isatty()

    # ------------------------------------------------------------------ messages to the user
    def say(self, text: str) -> None:
        if self._status_live:
            self.out.write("\r\x1b[K")
        self.out.write(text + "\n")
        self.out.flush()

    def warn(self, text: str) -> None:
        self.state.warnings.append(text)
        self.say("WARNING: " + text)

    # ------------------------------------------------------------------ entry points
    async def call(self, host: str, port: int) -> dict[str, Any]:
        return await self._run(Role.INITIATOR, host, port)

    async def answer(
        self, host: str, port: int, on_listening: Any = None, accept_timeout: float | None = None
    ) -> dict[str, Any]:
        self._on_listening = on_listening
        self._accept_timeout = accept_timeout
        return await self._run(Role.RESPONDER, host, port)

    async def _run(self, role: Role, host: str, port: int) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGINT, self._interrupt)
            loop.add_signal_handler(signal.SIGTERM, self._interrupt)
        if self.identity_created:
            self.say(f"created identity {self.profile.identity_file}")
        self.say(f"identity {self.identity.public.fingerprint()} (SAE {self.profile.sae_id})")
        try:
            self.result = await self._setup(role, host, port)
            self._check_pin(self.result)
            await self._media()
        except (TransportError, HandshakeFailed, KmeError, CallFailed, OSError) as exc:
            failure = exc
            if isinstance(exc, HandshakeFailed) and "is not the expected" in str(exc):
                if "peer aborted" in str(exc):
                    failure = CallFailed(
                        f"the peer refused this terminal's identity: it has another key pinned "
                        f"for {self.profile.sae_id} ({exc}). If this identity is new on purpose, "
                        "the peer must verify it and use --trust-new-identity"
                    )
                else:
                    failure = self._identity_changed(exc)
            self.state.end_reason = self.state.end_reason or f"failed: {failure}"
            self.say(f"call failed: {failure}")
            await self._shutdown(send_bye=False)
            raise CallFailed(str(failure)) from exc
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGINT)
                loop.remove_signal_handler(signal.SIGTERM)
        return self.summary()

    async def _setup(self, role: Role, host: str, port: int) -> HandshakeResult:
        """Connect (signaling, ICE, DTLS) and run the hybrid handshake."""
        if role is Role.INITIATOR:
            qkd = await self._handshake_keys()
            t0 = time.monotonic()
            self.state.phase = "connecting"
            self.say(f"calling {host}:{port} ...")
            await self.transport.connect_as_caller(host, port)
        else:
            self.state.phase = "listening"

            def listening(listener: Any) -> None:
                self.say(f"waiting for a call on {listener.host}:{listener.port} ...")
                if self._on_listening:
                    self._on_listening(listener)

            await self.transport.accept_as_answerer(
                host, port, on_listening=listening, accept_timeout=self._accept_timeout
            )
            t0 = time.monotonic()
        self.timings["connect_ms"] = (time.monotonic() - t0) * 1e3
        self.state.phase = "handshake"
        # the caller may start talking before our side has processed its Finish: keep those
        # frames (bounded) until the session exists
        self.transport.set_frame_callback(self._early.append)
        t1 = time.monotonic()
        if role is Role.INITIATOR:
            result = await self._initiate(qkd)
        else:
            result = await self._respond()
        self.timings["handshake_ms"] = (time.monotonic() - t1) * 1e3
        return result

    def _interrupt(self) -> None:
        self.state.end_reason = self.state.end_reason or "hung up (interrupted)"
        self._stop.set()

    # ------------------------------------------------------------------ handshake
    async def _handshake_keys(self) -> list[QkdKey]:
        """The caller's QKD key for the handshake (ETSI 014 enc_keys), or PQC-only fallback."""
        t0 = time.monotonic()
        try:
            bits = self.opt.call_params().handshake_qkd_bits
            keys = await retry_out_of_keys(
                lambda: self.kme.enc_keys(self.profile.peer_sae_id, 1, bits),
                self.opt.kme_wait,
                lambda: self.say("waiting for the QKD link to deliver key ..."),
            )
        except KmeError as exc:
            mode = self.opt.mode or Mode.AES
            if self.opt.allow_pqc_only and mode is Mode.AES:
                self.warn(f"no QKD key ({exc}); continuing PQC-only (ML-KEM + X25519) as allowed")
                self.pqc_only = True
                return []
            hint = "" if mode is Mode.OTP else " (or allow a PQC-only call with --allow-pqc-only)"
            raise CallFailed(f"cannot get a QKD key from the KME: {exc}{hint}") from exc
        finally:
            self.timings["kme_ms"] = (time.monotonic() - t0) * 1e3
        return keys

    async def _recv_handshake(self) -> bytes:
        try:
            data = await self.transport.recv_control(timeout=HANDSHAKE_TIMEOUT)
        except TimeoutError as exc:
            raise HandshakeFailed("the peer did not answer the handshake in time") from exc
        if data.startswith(ABORT):
            reason = data[len(ABORT) :].decode(errors="replace")[:300]
            raise HandshakeFailed(f"the peer aborted the handshake: {reason}")
        return data

    def _abort(self, reason: str) -> None:
        with contextlib.suppress(Exception):
            self.transport.send_control(ABORT + reason.encode()[:300])

    async def _initiate(self, qkd: list[QkdKey]) -> HandshakeResult:
        params = self.opt.call_params(self.pqc_only)
        ini = Initiator(
            self.identity, params, qkd, self.transport.channel_binding(), self._expected_peer()
        )
        self.transport.send_control(ini.start())
        try:
            events = ini.receive(await self._recv_handshake())
        except HandshakeFailed as exc:
            self._abort(str(exc))
            raise
        for ev in events:
            if isinstance(ev, SendMessage):
                self.transport.send_control(ev.data)
            elif isinstance(ev, HandshakeComplete):
                return ev.result
        raise HandshakeFailed("handshake ended without a result")

    async def _respond(self) -> HandshakeResult:
        policy = ResponderPolicy(
            allow_pqc_only=self.opt.allow_pqc_only,
            required_mode=self.opt.mode,
            expected_peer=self._expected_peer(),
        )
        res = Responder(self.identity, self.transport.channel_binding(), policy)
        try:
            events = res.receive(await self._recv_handshake())
            while True:
                for ev in events:
                    if isinstance(ev, HandshakeComplete):
                        self.pqc_only = ev.result.params.pqc_only
                        return ev.result
                    if isinstance(ev, SendMessage):
                        self.transport.send_control(ev.data)
                nxt = events[0] if events else None
                if isinstance(nxt, NeedQkdKeys):
                    t0 = time.monotonic()
                    try:
                        keys = await self.kme.dec_keys(self.profile.peer_sae_id, list(nxt.key_ids))
                    except KmeError as exc:
                        res.fail(f"the answering side's KME could not resolve the QKD keys: {exc}")
                        raise  # unreachable: fail() raises
                    finally:
                        self.timings["kme_ms"] = (time.monotonic() - t0) * 1e3
                    events = res.provide_qkd_keys(keys)
                    continue
                events = res.receive(await self._recv_handshake())
        except HandshakeFailed as exc:
            self._abort(str(exc))
            raise

    def _expected_peer(self) -> PublicIdentity | None:
        if self.opt.trust_new_identity:
            return None
        return KnownPeers(self.profile.known_peers).pinned(self.profile.peer_sae_id)

    def _identity_changed(self, exc: HandshakeFailed) -> CallFailed:
        return CallFailed(
            f"!!! IDENTITY OF {self.profile.peer_sae_id} CHANGED ({exc}). Someone may be "
            "impersonating the peer. Verify the new fingerprint out of band, then call again "
            "with --trust-new-identity to pin it."
        )

    def _check_pin(self, result: HandshakeResult) -> None:
        pins = KnownPeers(self.profile.known_peers)
        pin = pins.check(self.profile.peer_sae_id, result.peer)
        self.pin_status = pin.status.value
        if pin.status is PinStatus.NEW:
            self.say(
                f"first call with {self.profile.peer_sae_id}: pinned identity {pin.fingerprint}"
            )
        elif pin.status is PinStatus.CHANGED:
            banner = (
                f"!!! IDENTITY OF {self.profile.peer_sae_id} CHANGED: pinned {pin.pinned}, "
                f"now {pin.fingerprint}. Someone may be impersonating the peer."
            )
            if not self.opt.trust_new_identity:
                self._abort("peer identity changed; call refused")
                raise CallFailed(
                    banner + " Verify the new fingerprint out of band, then call again with "
                    "--trust-new-identity to pin it."
                )
            self.warn(banner + " Re-pinned because --trust-new-identity was given.")
            pins.repin(self.profile.peer_sae_id, result.peer)

    # ------------------------------------------------------------------ media
    def _open_audio(self) -> tuple[AudioSource, AudioSink, bool]:
        cfg = self.opt.opus()
        spf = cfg.samples_per_frame
        paced = True
        source: AudioSource
        sink: AudioSink
        if self.opt.input is None:
            source = SilenceSource(spf)
        elif _is_wav(self.opt.input):
            source = WavSource(self.opt.input, cfg.sample_rate, spf)
        else:
            from qphone.audio.streams import DeviceSource

            source, paced = DeviceSource(self._device(self.opt.input, capture=True)), False
        if self.opt.output is None:
            sink = NullSink()
        elif _is_wav(self.opt.output):
            sink = WavSink(self.opt.output, cfg.sample_rate)
        else:
            from qphone.audio.streams import DeviceSink

            sink = DeviceSink(self._device(self.opt.output, capture=False))
        return source, sink, paced

    def _device(self, spec: str, capture: bool) -> Any:
        """A sound device (PortAudio via pyaudio) for capture or playback, by name or index."""
        from qphone.audio.devices import AudioDevice

        cfg = self.opt.opus()
        name = spec.removeprefix("device:")
        return AudioDevice(
            rate=cfg.sample_rate,
            frame_samples=cfg.samples_per_frame,
            capture=capture,
            playback=not capture,
            input_device=name if capture else None,
            output_device=None if capture else name,
        )

    async def _media(self) -> None:
        assert self.result is not None
        session = CallSession(self.result)
        self.session = session
        self.state.sas = session.sas
        from qphone.endpoint.keysupply import KeySupply

        self._supply = KeySupply(
            session, self.kme, self.profile.peer_sae_id, self._flush, self._key_failure
        )
        source, sink, paced = self._open_audio()
        for dev in (source, sink):
            start = getattr(getattr(dev, "_dev", None), "start", None)
            if start is not None:
                await start()
        self.say(
            f"connected to {self.profile.peer_sae_id} ({self.result.peer.fingerprint()}), "
            f"mode {session.mode.label}{' PQC-ONLY (no QKD)' if self.pqc_only else ''}"
        )
        self.say(f"SAS: >>> {session.sas} <<<  (read it aloud; both screens must show it)")
        self.state.phase = "in call"
        self.state.started = time.monotonic()
        self._dispatch(session.start())
        while self._early:
            self._on_frame(self._early.popleft())
        self.transport.set_frame_callback(self._on_frame)
        tasks = [
            asyncio.create_task(self._send_loop(source, paced), name="send"),
            asyncio.create_task(self._playout_loop(sink), name="playout"),
            asyncio.create_task(self._control_loop(), name="control"),
            asyncio.create_task(self._watch_transport(), name="watch"),
        ]
        if self._status_live:
            tasks.append(asyncio.create_task(self._status_loop(), name="status"))
        if self.opt.duration is not None:
            tasks.append(asyncio.create_task(self._timer(self.opt.duration), name="timer"))
        try:
            await self._stop.wait()
            # hang-up: stop talking, let frames already on the wire arrive, then say bye
            tasks[0].cancel()
            if not self.state.end_reason.startswith("failed"):
                await asyncio.sleep(DRAIN_S)
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            self.transport.set_frame_callback(None)
            await self._shutdown(send_bye=True)
            await source.close()
            await sink.close()
        if self.state.end_reason.startswith("failed"):
            raise CallFailed(self.state.end_reason.removeprefix("failed: "))

    async def _wait_for_key(self, session: CallSession, timeout: float = 10.0) -> None:
        """OTP: do not start talking before the first pad is held by both ends."""
        if session.mode is not Mode.OTP:
            return
        deadline = time.monotonic() + timeout
        while session.pad_left_bytes < 1024 and not self._stop.is_set():
            if time.monotonic() > deadline:
                self._end(f"failed: no one-time pad from the KME within {timeout:g} s")
                return
            await asyncio.sleep(0.01)

    def _end(self, reason: str) -> None:
        if not self.state.end_reason:
            self.state.end_reason = reason
        self._stop.set()

    async def _timer(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self._end(f"duration of {seconds:g} s reached")

    def _dispatch(self, events: list[Any]) -> None:
        for ev in events:
            if isinstance(ev, SendControl):
                with contextlib.suppress(TransportError):
                    self.transport.send_control(ev.data)
            elif isinstance(ev, FetchQkdKeys | ResolveQkdKeys):
                self._supply.submit(ev)
            elif isinstance(ev, EpochStarted):
                tx = ev.direction is self._send_dir()
                (self.state.epochs_tx if tx else self.state.epochs_rx).append(ev.epoch)
                if self.opt.log_playout:
                    self.epoch_log.append((time.monotonic(), "tx" if tx else "rx", ev.epoch))
            elif isinstance(ev, RotationOverdue):
                self.warn(
                    f"epoch {ev.epoch} is over but the next QKD key is not ready yet; "
                    "keeping the current key (KME slow or empty?)"
                )
            elif isinstance(ev, PeerBye):
                if ev.reason.startswith("failed: "):
                    self._end(f"failed: the peer ended the call: {ev.reason[8:]}")
                else:
                    self._end(f"peer hung up ({ev.reason})")

    def _send_dir(self) -> Direction:
        assert self.session is not None
        return self.session.send_dir

    def _flush(self) -> None:
        if self.session is not None:
            self._dispatch(self.session.events())

    def _key_failure(self, exc: KmeError) -> None:
        if self.opt.allow_pqc_only and self.session is not None and self.session.mode is Mode.AES:
            self.warn(
                f"KME failed mid-call ({exc}); keys no longer rotate with fresh QKD key, "
                "continuing on the current key as --allow-pqc-only permits"
            )
            return
        self._end(f"failed: QKD key supply failed mid-call: {exc} (fail closed)")

    async def _send_loop(self, source: AudioSource, paced: bool) -> None:
        assert self.session is not None
        cfg = self.opt.opus()
        step = cfg.samples_per_frame
        frame_s = self.opt.frame_ms / 1000
        silence = bytes(cfg.frame_bytes)
        i = 0
        starved: float | None = None
        await self._wait_for_key(self.session)
        start = time.monotonic()  # the pacing clock starts when talking can start (no burst)
        protect = self.session.protect
        while True:
            pcm = await source.read_frame()
            if pcm is None:
                if not self.state.input_ended:
                    self.state.input_ended = True
                    if self.opt.duration is None:
                        asyncio.get_running_loop().call_later(0.5, self._end, "input finished")
                pcm = silence
            now = time.monotonic()
            self.state.input_level = level_dbfs(pcm)
            t0 = time.perf_counter()
            packet = self.encoder.encode(pcm)
            t1 = time.perf_counter()
            try:
                frame = protect(packet, now)
            except KeyExhausted as exc:
                # never reuse key: drop this frame; end the call if no fresh key comes soon
                self.state.frames_unsent += 1
                if starved is None:
                    starved = now
                    self.warn(f"{exc}; frames are dropped until fresh key arrives")
                elif now - starved > 3.0:
                    self._end(f"failed: {exc} for 3 s; the call ends (fail closed)")
                    return
                frame = b""
            else:
                starved = None
            t2 = time.perf_counter()
            self.state.encode_seconds += t1 - t0
            self.state.protect_seconds += t2 - t1
            ts = i * step
            if frame:
                self.transport.send_frame(frame, ts)
                if self.opt.log_playout:
                    self.send_log.append((ts, now))
                    self.sent_frames.append(
                        SentFrame(ts, now, time.monotonic(), t1 - t0, t2 - t1, packet)
                    )
                    if i % 5 == 0:
                        self.key_log.append((now, self.session.snapshot_accounting().consumed))
                self.state.frames_sent += 1
                self.state.payload_bytes_sent += len(packet)
            self._flush()
            i += 1
            if i % 50 == 0 and self.session.mode is Mode.OTP:
                self._check_pad(self.session)
            if paced:
                delay = start + i * frame_s - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)

    def _check_pad(self, session: CallSession) -> None:
        """Warn (once per low spell) when the pad held covers less than PAD_WARN_S of talk."""
        per_frame = self.state.payload_bytes_sent / max(1, self.state.frames_sent)
        left = session.pad_seconds_left(1000 / self.opt.frame_ms, per_frame)
        if left < PAD_WARN_S and not self._pad_warned:
            self._pad_warned = True
            self.warn(
                f"one-time pad for only {left:.1f} s of talk left: the KME is not keeping up "
                "(check its key rate with `qkd-keyserver` status); the call ends when it runs out"
            )
        elif left > 2 * PAD_WARN_S:
            self._pad_warned = False

    _pad_warned = False

    def _on_frame(self, frame: ReceivedFrame) -> None:
        session = self.session
        if session is None or session.closed:
            return
        t0 = time.perf_counter()
        try:
            payload = session.unprotect(frame.payload, frame.arrival)
        except FrameRejected as exc:
            self.state.rejected[type(exc).__name__] += 1
            return
        except QphoneError:
            return
        spent = time.perf_counter() - t0
        self.state.unprotect_seconds += spent
        self.state.frames_received += 1
        if self.opt.log_playout:
            self.recv_log.append(
                ReceivedRecord(frame.rtp_timestamp, frame.sequence, frame.arrival, spent, payload)
            )
        self.playout.push(frame.sequence, frame.rtp_timestamp, payload, frame.arrival)
        self._flush()

    async def _playout_loop(self, sink: AudioSink) -> None:
        frame_s = self.opt.frame_ms / 1000
        while True:
            now = time.monotonic()
            for pcm in self.playout.due(now):
                sink.write_frame(pcm)
            due = self.playout.next_due()
            wait = frame_s if due is None else min(frame_s, max(0.0, due - time.monotonic()))
            await asyncio.sleep(wait)

    async def _control_loop(self) -> None:
        assert self.session is not None
        while True:
            data = await self.transport.recv_control()
            if data.startswith(ABORT):
                reason = data[len(ABORT) :].decode(errors="replace")[:300]
                self._end(f"failed: the peer aborted the call: {reason}")
                return
            try:
                self.session.receive_control(data)
            except ControlRejected as exc:
                self._end(f"failed: control message rejected ({exc}); call ended (fail closed)")
                return
            except QphoneError:
                return
            self._flush()

    async def _watch_transport(self) -> None:
        reason = await self.transport.wait_closed()
        self._end(f"failed: connection lost ({reason})")

    # ------------------------------------------------------------------ status
    def status_line(self) -> str:
        s, st = self.session, self.state
        jb = self.playout.jb.stats()
        parts = [st.phase, f"SAS {st.sas}"]
        if s is not None:
            parts.append(f"epoch tx {s.send_epoch}/rx {s.recv_epoch}")
            acc = s.snapshot_accounting()
            parts.append(f"QKD {acc.consumed / 1000:.1f} kbit")
            if s.mode is Mode.OTP:
                elapsed = max(1e-3, time.monotonic() - st.started)
                per_frame = st.payload_bytes_sent / max(1, st.frames_sent)
                left = s.pad_seconds_left(1000 / self.opt.frame_ms, per_frame)
                parts.append(f"talk time {left:.0f} s" if elapsed > 0.5 else "talk time ?")
        rtt = self._last_rtt
        parts.append(f"RTT {rtt * 1000:.1f} ms" if rtt is not None else "RTT -")
        expected = jb.received + jb.lost
        loss = jb.lost / expected if expected else 0.0
        parts.append(f"loss {loss:.1%}")
        parts.append(f"jb {jb.playout_delay_ms:.0f} ms")
        parts.append(f"in {st.input_level:.0f} dBFS")
        return " | ".join(parts)

    _last_rtt: float | None = None

    async def _status_loop(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                self._last_rtt = (await self.transport.stats()).rtt_s
            self.out.write("\r\x1b[K" + self.status_line())
            self.out.flush()
            await asyncio.sleep(0.5)

    # ------------------------------------------------------------------ end
    async def _shutdown(self, send_bye: bool) -> None:
        s = self.session
        if s is not None and not s.closed:
            self._pad_left_bits = 8 * s.pad_left_bytes
            if send_bye:
                with contextlib.suppress(Exception):
                    self.transport.send_control(s.bye(self.state.end_reason or "hangup"))
                    await asyncio.sleep(0.2)  # let the bye leave before the connection closes
            s.close()
        if self._supply is not None:
            await self._supply.aclose()
        with contextlib.suppress(Exception):
            self._last_rtt = (await self.transport.stats()).rtt_s
        with contextlib.suppress(Exception):
            self._transport_stats = await self.transport.stats()
        with contextlib.suppress(Exception):
            await self.transport.close()
        with contextlib.suppress(Exception):
            await self.kme.aclose()
        if self._status_live:
            self.out.write("\r\x1b[K")
        self.say(f"call ended: {self.state.end_reason or 'hangup'}")

    _transport_stats: Any = None
    _pad_left_bits = 0

    def summary(self) -> dict[str, Any]:
        s, st = self.session, self.state
        jb = self.playout.jb.stats()
        acc = s.snapshot_accounting() if s is not None else None
        out: dict[str, Any] = {
            "sas": st.sas,
            "mode": s.mode.label if s else (self.opt.mode or Mode.AES).label,
            "role": self.result.role.value if self.result else None,
            "pqc_only": self.pqc_only,
            "peer": self.profile.peer_sae_id,
            "peer_fingerprint": self.result.peer.fingerprint() if self.result else None,
            "peer_pin": self.pin_status,
            "handshake_ms": round(self.timings.get("handshake_ms", 0.0), 2),
            "connect_ms": round(self.timings.get("connect_ms", 0.0), 2),
            "kme_ms": round(self.timings.get("kme_ms", 0.0), 2),
            "frames_sent": st.frames_sent,
            "frames_received": st.frames_received,
            "frames_unsent_no_key": st.frames_unsent,
            "frames_lost": jb.lost,
            "frames_concealed": jb.concealed,
            "frames_fec_recovered": jb.fec_recovered,
            "frames_late": jb.late,
            "frames_rejected": dict(st.rejected),
            "duplicates_dropped": jb.duplicates + st.rejected.get("FrameReplayed", 0),
            "epochs": max([0, *st.epochs_tx, *st.epochs_rx]) + (1 if s else 0),
            "epochs_tx": st.epochs_tx,
            "epochs_rx": st.epochs_rx,
            "qkd_bits_consumed": acc.consumed if acc else 0,
            "qkd_bits": acc.as_dict() if acc else {},
            "pad_left_bits": self._pad_left_bits,
            "jitter_buffer_ms": round(jb.playout_delay_ms, 1),
            "duration_s": round(time.monotonic() - st.started, 2) if st.started else 0.0,
            "processing_us_per_frame": {
                "encode": round(st.encode_seconds / max(1, st.frames_sent) * 1e6, 1),
                "protect": round(st.protect_seconds / max(1, st.frames_sent) * 1e6, 1),
                "unprotect": round(st.unprotect_seconds / max(1, st.frames_received) * 1e6, 1),
                "decode": round(
                    self.playout.stats.decode_seconds
                    / max(1, jb.played + jb.fec_recovered + jb.concealed)
                    * 1e6,
                    1,
                ),
            },
            "end_reason": st.end_reason,
            "warnings": st.warnings,
        }
        if self._transport_stats is not None:
            ts = self._transport_stats
            out["rtt_ms"] = round(ts.rtt_s * 1000, 2) if ts.rtt_s is not None else None
            out["transport"] = {
                "frames_sent": ts.frames_sent,
                "frames_received": ts.frames_received,
                "frames_lost": ts.frames_lost,
            }
        return out
