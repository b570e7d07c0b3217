"""Where a call's audio comes from and goes to: a WAV file, a sound device, silence, or nowhere.

A source yields one frame of mono int16 PCM per :meth:`AudioSource.read_frame` (None once a WAV
file has ended); a sink takes the frames played out.  :func:`open_source` and :func:`open_sink`
pick one from a spec (what ``--input`` / ``--output`` take):

* ``silence`` (or None) / ``discard`` (or None): digital silence in, nothing out;
* ``default``: the system's default sound input / output device;
* a WAV file (``*.wav``, a path, or anything that exists on disk, which must then be a WAV file);
* a sound device by name or index from ``qphone devices`` (``device:NAME`` forces a device).

Both check everything they can before returning, without starting anything: a WAV input is read
and decoded, a device is found and its format checked, a WAV output's directory must exist and
be writable.  A spec that cannot work raises :class:`AudioSpecError` naming the fix, so a call
finds it before any network activity.  A WAV source is read as fast as it is asked, so the send
path paces it; a device delivers in real time by itself.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from qphone.audio.devices import DEFAULT_DEVICE, AudioDevice, AudioDeviceError, check_device
from qphone.audio.opus import OpusConfig
from qphone.audio.wav import Encoding, WavFormatError, WavInfo, iter_frames, read_wav, wav_info
from qphone.audio.wavrecording import WavRecording

SILENCE = "silence"
DISCARD = "discard"
DEVICE_PREFIX = "device:"


class AudioSpecError(ValueError):
    """An input or output spec that cannot work; the message names the fix."""


class AudioSource(Protocol):
    #: what the input is, for the user: the file or device and any conversion applied
    description: str

    async def start(self) -> None:
        """Open the input (a sound device starts capturing)."""

    async def read_frame(self) -> bytes | None:
        """One frame of mono int16 PCM, or None when the input has ended."""

    async def close(self) -> None: ...


class AudioSink(Protocol):
    #: what the output is, for the user
    description: str

    async def start(self) -> None:
        """Open the output (a sound device starts playing)."""

    def write_frame(self, pcm: bytes) -> None: ...

    async def close(self) -> None: ...


class WavSource:
    """Frames from a WAV file (resampled to the call's rate); None at the end (or, with
    ``loop``, the file again from the start)."""

    def __init__(self, path: str | Path, rate: int, frame_samples: int, loop: bool = False) -> None:
        info = wav_info(path)
        pcm, _ = read_wav(path, rate)
        self._frames = list(iter_frames(pcm, frame_samples))
        if not self._frames:
            raise WavFormatError(f"{path} holds no audio")
        self._loop = loop
        self._i = 0
        self.description = describe_wav_input(path, info, rate, loop)

    async def start(self) -> None:
        return None

    async def read_frame(self) -> bytes | None:
        if self._i >= len(self._frames):
            if not self._loop:
                return None
            self._i = 0
        self._i += 1
        return self._frames[self._i - 1]

    async def close(self) -> None:
        return None


def describe_wav_input(path: str | Path, info: WavInfo, rate: int, loop: bool) -> str:
    """``WAV file x.wav (44.1 kHz, 2 channels, 24-bit PCM: downmixed to mono, resampled to
    48 kHz)``: the file and every conversion the call applies to it."""
    kind = "float" if info.encoding is Encoding.FLOAT else "PCM"
    channels = "mono" if info.channels == 1 else f"{info.channels} channels"
    done = []
    if info.channels > 1:
        done.append("downmixed to mono")
    if info.sample_rate != rate:
        done.append(f"resampled to {rate / 1000:g} kHz")
    if info.sample_width != 2 or info.encoding is Encoding.FLOAT:
        done.append("converted to 16-bit")
    if loop:
        done.append("repeated")
    return (
        f"WAV file {path} ({info.sample_rate / 1000:g} kHz, {channels}, "
        f"{8 * info.sample_width}-bit {kind}{': ' + ', '.join(done) if done else ''})"
    )


class SilenceSource:
    """Digital silence, for ever."""

    description = "silence"

    def __init__(self, frame_samples: int) -> None:
        self._frame = bytes(2 * frame_samples)

    async def start(self) -> None:
        return None

    async def read_frame(self) -> bytes | None:
        return self._frame

    async def close(self) -> None:
        return None


def _to_stderr(text: str) -> None:
    print(f"qphone: {text}", file=sys.stderr, flush=True)


class WavSink:
    """Records played-out frames in a WAV file, written second by second
    (:class:`~qphone.audio.wavrecording.WavRecording`: at most the last second is lost, and a
    file or folder that vanishes moves the recording instead of failing the call).  ``warn``
    (settable: the endpoint puts its console's) says where a recording had to move."""

    def __init__(self, path: str | Path, rate: int) -> None:
        self.path = Path(path)
        self.rate = rate
        self.description = f"WAV file {self.path} (mono 16-bit PCM, {rate / 1000:g} kHz)"
        self.warn: Callable[[str], None] = _to_stderr
        self._recording: WavRecording | None = None

    async def start(self) -> None:
        self._recording = WavRecording(self.path, self.rate, self.warn)
        self._recording.open()

    def write_frame(self, pcm: bytes) -> None:
        if self._recording is not None:
            self._recording.append(pcm)

    async def close(self) -> None:
        if self._recording is not None:
            self._recording.close()
            self.path = self._recording.path


class NullSink:
    """Discards what is played out."""

    description = "discarded"

    async def start(self) -> None:
        return None

    def write_frame(self, pcm: bytes) -> None:
        return None

    async def close(self) -> None:
        return None


class DeviceSource:
    """Capture from a sound device (PortAudio)."""

    def __init__(self, device: AudioDevice, description: str = "a sound device") -> None:
        self.device = device
        self.description = description

    async def start(self) -> None:
        await self.device.start()

    async def read_frame(self) -> bytes | None:
        return await self.device.read_frame()

    async def close(self) -> None:
        await self.device.close()


class DeviceSink:
    """Playback on a sound device (PortAudio)."""

    def __init__(self, device: AudioDevice, description: str = "a sound device") -> None:
        self.device = device
        self.description = description

    async def start(self) -> None:
        await self.device.start()

    def write_frame(self, pcm: bytes) -> None:
        self.device.write_frame(pcm)

    async def close(self) -> None:
        await self.device.close()


def is_wav(spec: str) -> bool:
    return spec.lower().endswith(".wav")


def _is_file_spec(spec: str) -> bool:
    """A WAV path (by its name), a path (with a directory part), or anything that exists on
    disk: then it must be a WAV file.  Otherwise a device name."""
    return is_wav(spec) or os.sep in spec or os.path.exists(spec)


def _device(spec: str, config: OpusConfig, capture: bool) -> tuple[AudioDevice, str]:
    """A sound device for capture or playback, checked now (found, format supported), and
    what it is for the user."""
    name = spec.removeprefix(DEVICE_PREFIX)
    kind = "input" if capture else "output"
    try:
        info = check_device(name, output=not capture, rate=config.sample_rate)
    except AudioDeviceError as exc:
        if name == DEFAULT_DEVICE:
            raise AudioSpecError(f"the default sound {kind} device cannot be used: {exc}") from None
        raise AudioSpecError(str(exc)) from None
    default = info.is_default_input if capture else info.is_default_output
    description = (
        f"sound {kind} device {info.name!r} (#{info.index}, {info.host_api}"
        f"{', the system default' if default else ''}), mono 16-bit at "
        f"{config.sample_rate / 1000:g} kHz"
        + (
            f" (the device runs at {info.default_sample_rate / 1000:g} kHz: the sound "
            "system resamples)"
            if round(info.default_sample_rate) != config.sample_rate
            else ""
        )
    )
    device = AudioDevice(
        rate=config.sample_rate,
        frame_samples=config.samples_per_frame,
        capture=capture,
        playback=not capture,
        input_device=name if capture else None,
        output_device=None if capture else name,
    )
    return device, description


def open_source(
    spec: str | None, config: OpusConfig, loop: bool = False
) -> tuple[AudioSource, bool]:
    """The input named by ``spec`` and whether the sender must pace it (True but for devices).

    ``loop`` repeats a WAV input until the call ends.  Raises :class:`AudioSpecError`."""
    if spec is None or spec == SILENCE:
        return SilenceSource(config.samples_per_frame), True
    if not spec.startswith(DEVICE_PREFIX) and _is_file_spec(spec):
        if os.path.isdir(spec):
            raise AudioSpecError("is a directory: give a WAV file")
        if not os.path.isfile(spec):
            raise AudioSpecError("no such file (give an existing WAV file)")
        try:
            source = WavSource(spec, config.sample_rate, config.samples_per_frame, loop)
        except WavFormatError as exc:
            raise AudioSpecError(str(exc).removeprefix(f"{spec}: ")) from None
        except OSError as exc:
            raise AudioSpecError(f"cannot read it: {exc.strerror or exc}") from None
        return source, True
    return DeviceSource(*_device(spec, config, capture=True)), False


def open_sink(spec: str | None, config: OpusConfig) -> AudioSink:
    """The output named by ``spec``.  Raises :class:`AudioSpecError`."""
    if spec is None or spec == DISCARD:
        return NullSink()
    if not spec.startswith(DEVICE_PREFIX) and _is_file_spec(spec):
        check_writable(Path(spec))
        return WavSink(spec, config.sample_rate)
    return DeviceSink(*_device(spec, config, capture=False))


@dataclass
class CallAudio:
    """A call's input and output, opened (checked) but not started."""

    source: AudioSource
    paced: bool  # the send path paces the source (everything but a sound device)
    sink: AudioSink


def open_call_audio(
    input_spec: str | None, output_spec: str | None, config: OpusConfig, loop: bool = False
) -> CallAudio:
    """:func:`open_source` and :func:`open_sink` in one; raises :class:`AudioSpecError`."""
    source, paced = open_source(input_spec, config, loop)
    return CallAudio(source, paced, open_sink(output_spec, config))


def check_writable(path: Path) -> None:
    """Raise :class:`AudioSpecError` unless a file can be written at ``path``: the directory
    must exist and take a new file (a probe file is created in it and removed at once, which
    catches what permissions do not say: /proc, a read-only mount), an existing file must be
    writable.  The message does not repeat ``path``: the caller names it with its option."""
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise AudioSpecError(f"is a directory: give a file name, e.g. {path / 'out.wav'}")
    if not parent.is_dir():
        raise AudioSpecError(
            f"directory {parent} does not exist: create it first or pick another file"
        )
    if path.exists() and not os.access(path, os.W_OK):
        raise AudioSpecError("not writable: pick another file or fix its permissions")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise AudioSpecError(f"directory {parent} is not writable: pick another directory")
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".qphone-probe-"):
            pass
    except OSError as exc:
        raise AudioSpecError(
            f"no file can be created in {parent} ({exc.strerror or exc}): pick another directory"
        ) from None
