"""Where a call's audio comes from and goes to: a WAV file, a sound device, silence, or nowhere.

A source yields one frame of mono int16 PCM per :meth:`AudioSource.read_frame` (None once a WAV
file has ended); a sink takes the frames played out.  :func:`open_source` and :func:`open_sink`
pick one from a spec: ``None`` (silence / discard), a ``*.wav`` path, or a sound device by name
or index (optionally prefixed ``device:``).  A WAV source is read as fast as it is asked, so the
send path paces it; a device delivers in real time by itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from qphone.audio.devices import AudioDevice
from qphone.audio.opus import OpusConfig
from qphone.audio.wav import iter_frames, read_wav, write_wav


class AudioSource(Protocol):
    async def start(self) -> None:
        """Open the input (a sound device starts capturing)."""

    async def read_frame(self) -> bytes | None:
        """One frame of mono int16 PCM, or None when the input has ended."""

    async def close(self) -> None: ...


class AudioSink(Protocol):
    async def start(self) -> None:
        """Open the output (a sound device starts playing)."""

    def write_frame(self, pcm: bytes) -> None: ...

    async def close(self) -> None: ...


class WavSource:
    """Frames from a WAV file (resampled to the call's rate); None at the end."""

    def __init__(self, path: str | Path, rate: int, frame_samples: int) -> None:
        pcm, _ = read_wav(path, rate)
        self._frames = list(iter_frames(pcm, frame_samples))
        self._i = 0

    async def start(self) -> None:
        return None

    async def read_frame(self) -> bytes | None:
        if self._i >= len(self._frames):
            return None
        self._i += 1
        return self._frames[self._i - 1]

    async def close(self) -> None:
        return None


class SilenceSource:
    """Digital silence, for ever."""

    def __init__(self, frame_samples: int) -> None:
        self._frame = bytes(2 * frame_samples)

    async def start(self) -> None:
        return None

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

    async def start(self) -> None:
        return None

    def write_frame(self, pcm: bytes) -> None:
        self.frames.append(pcm)

    async def close(self) -> None:
        write_wav(self.path, b"".join(self.frames), self.rate)


class NullSink:
    """Discards what is played out."""

    async def start(self) -> None:
        return None

    def write_frame(self, pcm: bytes) -> None:
        return None

    async def close(self) -> None:
        return None


class DeviceSource:
    """Capture from a sound device (PortAudio)."""

    def __init__(self, device: AudioDevice) -> None:
        self.device = device

    async def start(self) -> None:
        await self.device.start()

    async def read_frame(self) -> bytes | None:
        return await self.device.read_frame()

    async def close(self) -> None:
        await self.device.close()


class DeviceSink:
    """Playback on a sound device (PortAudio)."""

    def __init__(self, device: AudioDevice) -> None:
        self.device = device

    async def start(self) -> None:
        await self.device.start()

    def write_frame(self, pcm: bytes) -> None:
        self.device.write_frame(pcm)

    async def close(self) -> None:
        await self.device.close()


def is_wav(spec: str) -> bool:
    return spec.lower().endswith(".wav")


def _device(spec: str, config: OpusConfig, capture: bool) -> AudioDevice:
    """A sound device for capture or playback, by name or index (``device:`` prefix allowed)."""
    name = spec.removeprefix("device:")
    return AudioDevice(
        rate=config.sample_rate,
        frame_samples=config.samples_per_frame,
        capture=capture,
        playback=not capture,
        input_device=name if capture else None,
        output_device=None if capture else name,
    )


def open_source(spec: str | None, config: OpusConfig) -> tuple[AudioSource, bool]:
    """The input named by ``spec`` and whether the sender must pace it (True but for devices)."""
    if spec is None:
        return SilenceSource(config.samples_per_frame), True
    if is_wav(spec):
        return WavSource(spec, config.sample_rate, config.samples_per_frame), True
    return DeviceSource(_device(spec, config, capture=True)), False


def open_sink(spec: str | None, config: OpusConfig) -> AudioSink:
    """The output named by ``spec``."""
    if spec is None:
        return NullSink()
    if is_wav(spec):
        return WavSink(spec, config.sample_rate)
    return DeviceSink(_device(spec, config, capture=False))
