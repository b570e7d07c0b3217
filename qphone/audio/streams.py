"""Audio in and out of a call: sources, sinks, and the Opus + jitter-buffer playout path.

capture (device or WAV) -> Opus encode -> frame protection (core) -> transport
transport -> unprotect (core) -> jitter buffer (core) -> Opus decode / FEC / PLC -> playout
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from qphone.audio.opus import OpusConfig, OpusDecoder, decode_playout
from qphone.audio.wav import iter_frames, read_wav, write_wav
from qphone.core.jitterbuffer import JitterBuffer, JitterBufferConfig, PlayoutKind

SILENCE_DBFS = -120.0


def level_dbfs(pcm: bytes) -> float:
    if not pcm:
        return SILENCE_DBFS
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    rms = float(np.sqrt(np.mean(x * x))) / 32768.0
    return 20 * float(np.log10(rms)) if rms > 1e-6 else SILENCE_DBFS


class AudioSource(Protocol):
    async def read_frame(self) -> bytes | None:
        """One frame of mono int16 PCM, or None when the input has ended."""

    async def close(self) -> None: ...


class AudioSink(Protocol):
    def write_frame(self, pcm: bytes) -> None: ...

    async def close(self) -> None: ...


class WavSource:
    """Frames from a WAV file (resampled to the call's rate); None at the end."""

    def __init__(self, path: str | Path, rate: int, frame_samples: int) -> None:
        pcm, _ = read_wav(path, rate)
        self._frames = list(iter_frames(pcm, frame_samples))
        self._i = 0

    async def read_frame(self) -> bytes | None:
        if self._i >= len(self._frames):
            return None
        self._i += 1
        return self._frames[self._i - 1]

    async def close(self) -> None:
        return None


class SilenceSource:
    def __init__(self, frame_samples: int) -> None:
        self._frame = bytes(2 * frame_samples)

    async def read_frame(self) -> bytes | None:
        return self._frame

    async def close(self) -> None:
        return None


class WavSink:
    """Collects played-out frames and writes them as a WAV file when closed."""

    def __init__(self, path: str | Path, rate: int) -> None:
        self.path = Path(path)
        self.rate = rate
        self.frames: list[bytes] = []

    def write_frame(self, pcm: bytes) -> None:
        self.frames.append(pcm)

    async def close(self) -> None:
        write_wav(self.path, b"".join(self.frames), self.rate)


class NullSink:
    def write_frame(self, pcm: bytes) -> None:
        return None

    async def close(self) -> None:
        return None


class DeviceSource:
    def __init__(self, device: object) -> None:
        self._dev = device

    async def read_frame(self) -> bytes | None:
        frame: bytes = await self._dev.read_frame()  # type: ignore[attr-defined]
        return frame

    async def close(self) -> None:
        await self._dev.close()  # type: ignore[attr-defined]


class DeviceSink:
    def __init__(self, device: object) -> None:
        self._dev = device

    def write_frame(self, pcm: bytes) -> None:
        self._dev.write_frame(pcm)  # type: ignore[attr-defined]

    async def close(self) -> None:
        await self._dev.close()  # type: ignore[attr-defined]


@dataclass
class PlayoutStats:
    normal: int = 0
    fec: int = 0
    plc: int = 0
    dtx: int = 0
    decode_errors: int = 0
    decode_seconds: float = 0.0
    playout_log: list[tuple[int, float, str]] = field(default_factory=list)
    decode_log: list[float] = field(default_factory=list)  # seconds, parallel to playout_log


class Playout:
    """Jitter buffer + Opus decoder for one received stream."""

    def __init__(self, config: OpusConfig, log_slots: bool = False) -> None:
        self.config = config
        self.jb = JitterBuffer(JitterBufferConfig.for_frame_ms(config.frame_ms))
        self.decoder = OpusDecoder(config)
        self.stats = PlayoutStats()
        self._log = log_slots

    def push(self, seq: int, timestamp: int, payload: bytes, arrival: float) -> None:
        self.jb.push(seq, timestamp, payload, arrival)

    def due(self, now: float) -> list[bytes]:
        """Decode every slot due at ``now``; return the PCM frames to play."""
        out = []
        for item in self.jb.pop_all(now):
            t0 = time.perf_counter()
            try:
                pcm = decode_playout(self.decoder, item)
            except ValueError:
                pcm = self.decoder.conceal()
                self.stats.decode_errors += 1
            counts = self.stats
            if item.kind is PlayoutKind.NORMAL:
                counts.normal += 1
            elif item.kind is PlayoutKind.FEC:
                counts.fec += 1
            elif item.kind is PlayoutKind.PLC:
                counts.plc += 1
            else:
                counts.dtx += 1
            spent = time.perf_counter() - t0
            self.stats.decode_seconds += spent
            if self._log:
                self.stats.playout_log.append((item.timestamp, now, item.kind.value))
                self.stats.decode_log.append(spent)
            out.append(pcm)
        return out

    def next_due(self) -> float | None:
        return self.jb.next_due
