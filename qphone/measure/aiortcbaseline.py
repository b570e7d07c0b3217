"""aiortc's stock audio path on loopback: the baseline of ``qphone bench latency``.

Two ``RTCPeerConnection`` objects in one process, ICE restricted to 127.0.0.1 (as qphone's own
transport does in tests), DTLS-SRTP and nothing else: no end-to-end encryption.  The sender's
track yields ``av.AudioFrame`` objects (s16 mono, 48 kHz, 20 ms) read from a WAV sample and paced
in real time; aiortc encodes them with its own Opus encoder (libopus through PyAV: 96 kbit/s,
stereo, ``application=voip``).  The receiver awaits ``recv()`` on the remote track, which returns
what aiortc's own jitter buffer (16 packets, 4 prefetched) and decoder thread deliver.

Times follow the convention of qphone's pipeline (``CallRecorder.send_log`` and ``playout_log``):
a frame's first sample was captured one frame duration before the track hands the complete frame
to aiortc, and a decoded frame is played out when ``recv()`` returns it (handed to the sink).
:func:`run_stock_path` returns those :class:`~qphone.measure.latency.Timelines`;
:func:`bench_latency_baseline` measures them with :func:`~qphone.measure.latency.measure_latency`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError

from qphone.audio.wav import Pcm, read_wav
from qphone.measure.latency import LatencyParams, Timelines, measure_latency
from qphone.transport.aiortchooks import restrict_host_candidates
from qphone.transport.config import LOOPBACK_ADDRESSES

RATE = 48000
FRAME_SAMPLES = 960  # 20 ms, what aiortc's Opus encoder packs
CONNECT_TIMEOUT = 15.0
TAIL_S = 0.5  # after the last frame is sent, wait this long for the rest to come out
MAX_SECONDS = 600.0


class StockPathError(RuntimeError):
    """The stock aiortc path could not be set up or delivered nothing."""


class PacedWavTrack(MediaStreamTrack):
    """An audio track that plays ``pcm`` (mono int16, 48 kHz) in real time, 20 ms per frame.

    ``capture_times[i]`` is the monotonic time frame ``i``'s first sample was captured, i.e. one
    frame duration before the complete frame was handed over.
    """

    kind = "audio"

    def __init__(self, pcm: Pcm) -> None:
        super().__init__()
        n = -(-len(pcm) // FRAME_SAMPLES)
        padded = np.zeros(n * FRAME_SAMPLES, dtype=np.int16)
        padded[: len(pcm)] = pcm
        self.pcm = padded
        self.frames = n
        self.capture_times: list[float] = []
        self.finished = asyncio.Event()
        self._start: float | None = None
        self._time_base = fractions.Fraction(1, RATE)

    async def recv(self) -> av.AudioFrame:
        i = len(self.capture_times)
        if self.readyState != "live" or i >= self.frames:
            self.finished.set()
            self.stop()
            raise MediaStreamError
        frame_s = FRAME_SAMPLES / RATE
        if self._start is None:
            self._start = time.monotonic()
        delay = self._start + (i + 1) * frame_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        chunk = self.pcm[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = i * FRAME_SAMPLES
        frame.time_base = self._time_base
        self.capture_times.append(time.monotonic() - frame_s)
        return frame


def _mono(frame: av.AudioFrame) -> Pcm:
    """A decoded frame (aiortc: s16 packed stereo, 48 kHz) as mono int16."""
    if frame.format.name != "s16" or frame.sample_rate != RATE:
        raise StockPathError(
            f"unexpected decoded audio: {frame.format.name} at {frame.sample_rate} Hz"
        )
    channels = len(frame.layout.channels)
    data = frame.to_ndarray().reshape(-1, channels).astype(np.int32)
    return np.asarray(np.rint(data.mean(axis=1)), dtype=np.int16)


@dataclass
class _Received:
    frames: list[tuple[float, Pcm]]


async def _connect(sender: RTCPeerConnection, receiver: RTCPeerConnection) -> None:
    connected = asyncio.Event()

    def check() -> None:
        if sender.connectionState == "connected" and receiver.connectionState == "connected":
            connected.set()

    sender.on("connectionstatechange", check)
    receiver.on("connectionstatechange", check)
    restrict_host_candidates(sender, LOOPBACK_ADDRESSES)
    await sender.setLocalDescription(await sender.createOffer())
    await receiver.setRemoteDescription(
        RTCSessionDescription(sender.localDescription.sdp, sender.localDescription.type)
    )
    restrict_host_candidates(receiver, LOOPBACK_ADDRESSES)
    await receiver.setLocalDescription(await receiver.createAnswer())
    await sender.setRemoteDescription(
        RTCSessionDescription(receiver.localDescription.sdp, receiver.localDescription.type)
    )
    check()
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            await connected.wait()
    except TimeoutError as exc:
        raise StockPathError(
            f"the two peer connections did not connect on 127.0.0.1 within {CONNECT_TIMEOUT} s "
            f"(states {sender.connectionState}/{receiver.connectionState})"
        ) from exc


async def _receive(track: MediaStreamTrack, out: _Received, sent: asyncio.Event) -> None:
    """Record (arrival time, mono PCM) of every decoded frame until the stream goes quiet:
    ``TAIL_S`` without a frame once the sender has finished (or ``CONNECT_TIMEOUT`` before)."""
    last = time.monotonic()
    while True:
        try:
            async with asyncio.timeout(0.1):
                frame = await track.recv()
        except TimeoutError:
            quiet = time.monotonic() - last
            if quiet > (TAIL_S if sent.is_set() else CONNECT_TIMEOUT):
                return
            continue
        except MediaStreamError:
            return
        last = time.monotonic()
        if not isinstance(frame, av.AudioFrame):
            raise StockPathError(f"the remote track returned {type(frame).__name__}")
        out.frames.append((last, _mono(frame)))


def load_sample(sample: Path, seconds: float) -> Pcm:
    """``seconds`` of the sample at 48 kHz mono, repeated if it is shorter."""
    if not 0 < seconds <= MAX_SECONDS:
        raise ValueError(f"seconds must lie in (0, {MAX_SECONDS:g}], got {seconds}")
    pcm, _ = read_wav(sample, RATE)
    if len(pcm) == 0:
        raise StockPathError(f"{sample} holds no audio")
    n = round(seconds * RATE)
    return np.resize(pcm, n).astype(np.int16)


async def run_stock_path(sample: Path, seconds: float) -> Timelines:
    """Play ``seconds`` of ``sample`` through aiortc's stock audio path; return the timelines."""
    pcm = load_sample(sample, seconds)
    track = PacedWavTrack(pcm)
    sender = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    receiver = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    remote: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()

    @receiver.on("track")
    def on_track(t: MediaStreamTrack) -> None:
        if t.kind == "audio" and not remote.done():
            remote.set_result(t)

    got = _Received([])
    try:
        transceiver = sender.addTransceiver(track, direction="sendonly")
        opus = [
            c
            for c in RTCRtpSender.getCapabilities("audio").codecs
            if c.mimeType.lower() == "audio/opus"
        ]
        transceiver.setCodecPreferences(opus)
        await _connect(sender, receiver)
        async with asyncio.timeout(CONNECT_TIMEOUT):
            remote_track = await remote
        receiving = asyncio.ensure_future(_receive(remote_track, got, track.finished))
        budget = seconds + CONNECT_TIMEOUT
        try:
            async with asyncio.timeout(budget):
                await asyncio.shield(receiving)
        except TimeoutError:
            receiving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiving
    finally:
        track.stop()
        await sender.close()
        await receiver.close()
    if not got.frames:
        raise StockPathError("aiortc's stock path delivered no audio")
    return Timelines.build(
        RATE,
        track.pcm[: len(track.capture_times) * FRAME_SAMPLES],
        FRAME_SAMPLES,
        track.capture_times,
        got.frames,
    )


async def bench_latency_baseline(
    sample: Path, seconds: float, params: LatencyParams | None = None
) -> dict[str, Any]:
    """Mouth-to-ear latency of aiortc's stock path (same method as for qphone's pipeline)."""
    timelines = await run_stock_path(sample, seconds)
    res = measure_latency(timelines, params)
    s = res.summary()
    intervals = np.diff(timelines.input_times) * 1000
    return {
        "stock_m2e_ms_p50": s["p50"],
        "stock_m2e_ms_p95": s["p95"],
        "stock_m2e_ms_p99": s["p99"],
        "stock_m2e_ms_max": s["max"],
        "windows": res.windows,
        "stock_frames_sent": len(timelines.input_times),
        "stock_frames_played": len(timelines.output_frames),
        # the sender's pacing (20 ms when the machine keeps up)
        "stock_capture_interval_ms_p50": round(float(np.median(intervals)), 3)
        if len(intervals)
        else None,
    }
