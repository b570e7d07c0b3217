"""Sound devices through PyAudio/PortAudio (the ``audio`` extra), usable from asyncio.

Capture and playback run in PortAudio's own callback threads. The capture callback hands each
frame to the event loop with ``loop.call_soon_threadsafe`` (a bounded asyncio queue that drops its
oldest frame when the consumer falls behind); the playback callback drains a bounded thread-safe
deque filled by :meth:`AudioDevice.write_frame` and plays silence on underrun. Nothing here ever
blocks the event loop: PortAudio initialisation and stream opening/closing run in a worker thread.

On Linux PortAudio reaches PulseAudio through ALSA's ``pulse`` device (Debian
``libasound2-plugins``), so with a PulseAudio server running the devices ``pulse`` and ``default``
appear in :func:`list_devices`; ``default`` names the system's default device (PortAudio's
default input or output, which PulseAudio's default source or sink backs).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

from qphone.audio.level import SILENCE_DBFS, level_dbfs

INSTALL_HINT = "pip install 'qphone[audio]'"
DEFAULT_DEVICE = "default"  # the system's default input or output device
NO_DEVICE_HINT = (
    "`qphone devices` lists the sound devices; use --input FILE.wav / --output FILE.wav, "
    "or --input silence / --output discard"
)


class AudioDeviceError(RuntimeError):
    """A sound device cannot be found, opened or used."""


@dataclasses.dataclass(frozen=True)
class DeviceInfo:
    """One PortAudio device as listed by ``qphone devices``."""

    index: int
    name: str
    max_input_channels: int
    max_output_channels: int
    default_sample_rate: float
    host_api: str
    is_default_input: bool = False
    is_default_output: bool = False


@dataclasses.dataclass
class AudioStats:
    """Counters of an :class:`AudioDevice` (updated from the PortAudio threads)."""

    frames_captured: int = 0
    frames_played: int = 0
    capture_overruns: int = 0  # frames dropped because the reader fell behind
    playback_underruns: int = 0  # callbacks that found no frame and played silence
    playback_overflows: int = 0  # frames dropped because the writer ran ahead
    status_flags: int = 0  # PortAudio status bits seen in callbacks (OR-ed)


def _pyaudio() -> Any:
    try:
        import pyaudio
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise AudioDeviceError(f"sound devices need PyAudio: {INSTALL_HINT}") from exc
    return pyaudio


@contextlib.contextmanager
def quiet_stderr(enabled: bool = True) -> Iterator[None]:
    """Silence C-level stderr (ALSA/JACK probing noise while PortAudio scans devices)."""
    if not enabled:
        yield
        return
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def list_devices(quiet: bool = True) -> list[DeviceInfo]:
    """All PortAudio devices (input and output)."""
    pyaudio = _pyaudio()
    with quiet_stderr(quiet):
        pa = pyaudio.PyAudio()
    try:
        return _list(pa)
    finally:
        pa.terminate()


def _list(pa: Any) -> list[DeviceInfo]:
    def default_index(getter: Any) -> int | None:
        try:
            return int(getter()["index"])
        except OSError:
            return None

    din = default_index(pa.get_default_input_device_info)
    dout = default_index(pa.get_default_output_device_info)
    out = []
    for i in range(pa.get_device_count()):
        d = pa.get_device_info_by_index(i)
        api = pa.get_host_api_info_by_index(d["hostApi"])["name"]
        out.append(
            DeviceInfo(
                index=i,
                name=str(d["name"]),
                max_input_channels=int(d["maxInputChannels"]),
                max_output_channels=int(d["maxOutputChannels"]),
                default_sample_rate=float(d["defaultSampleRate"]),
                host_api=str(api),
                is_default_input=i == din,
                is_default_output=i == dout,
            )
        )
    return out


def resolve_device(
    devices: list[DeviceInfo], spec: str | int | None, *, output: bool
) -> int | None:
    """Device index for ``spec``: None (PortAudio's default), ``"default"`` (the device marked
    as the system default), an index, or a unique name substring.

    An exact name match wins over substring matches.
    """
    if spec is None or spec == "":
        return None
    usable = [d for d in devices if (d.max_output_channels if output else d.max_input_channels) > 0]
    kind = "output" if output else "input"
    if not usable:
        raise AudioDeviceError(f"no sound {kind} device found; {NO_DEVICE_HINT}")
    if spec == DEFAULT_DEVICE:
        default = [d for d in usable if (d.is_default_output if output else d.is_default_input)]
        if not default:
            raise AudioDeviceError(
                f"this system has no default sound {kind} device; {NO_DEVICE_HINT}"
            )
        return default[0].index
    if isinstance(spec, int) or (isinstance(spec, str) and spec.isdigit()):
        idx = int(spec)
        if not any(d.index == idx for d in usable):
            raise AudioDeviceError(f"no {kind} device with index {idx}; {NO_DEVICE_HINT}")
        return idx
    exact = [d for d in usable if d.name == spec]
    if exact:
        return exact[0].index
    matches = [d for d in usable if spec.lower() in d.name.lower()]
    if len(matches) != 1:
        names = ", ".join(repr(d.name) for d in matches) or "none"
        raise AudioDeviceError(
            f"{kind} device {spec!r} must match exactly one device (matches: {names}); "
            + NO_DEVICE_HINT
        )
    return matches[0].index


def check_device(
    spec: str | int | None, *, output: bool, rate: int, quiet: bool = True
) -> DeviceInfo:
    """The device ``spec`` names, checked for mono int16 at ``rate`` without opening a stream
    (PortAudio's ``is_format_supported``); raises :class:`AudioDeviceError` naming the fix."""
    pyaudio = _pyaudio()
    with quiet_stderr(quiet):
        pa = pyaudio.PyAudio()
    try:
        devices = _list(pa)
        idx = resolve_device(devices, DEFAULT_DEVICE if spec is None else spec, output=output)
        info = next(d for d in devices if d.index == idx)
        kw: dict[str, Any] = (
            {"output_device": idx, "output_channels": 1, "output_format": pyaudio.paInt16}
            if output
            else {"input_device": idx, "input_channels": 1, "input_format": pyaudio.paInt16}
        )
        try:
            with quiet_stderr(quiet):
                pa.is_format_supported(rate, **kw)
        except ValueError as exc:
            kind = "output" if output else "input"
            raise AudioDeviceError(
                f"sound {kind} device {info.name!r} cannot run mono 16-bit audio at {rate} Hz "
                f"({exc}); pick another device ({NO_DEVICE_HINT})"
            ) from None
        return info
    finally:
        pa.terminate()


def format_devices(devices: list[DeviceInfo]) -> str:
    """The table printed by ``qphone devices`` (or a line saying there are none)."""
    if not devices:
        return (
            "no sound devices found (PortAudio sees none: on Linux a running PulseAudio or "
            "PipeWire server, or ALSA devices, are needed); calls can still use --input FILE.wav, "
            "--output FILE.wav, --input silence and --output discard"
        )
    lines = [f"{'idx':>3}  {'in':>3} {'out':>3}  {'rate':>7}  name"]
    for d in devices:
        mark = ("<" if d.is_default_input else " ") + (">" if d.is_default_output else " ")
        lines.append(
            f"{d.index:>3}  {d.max_input_channels:>3} {d.max_output_channels:>3}  "
            f"{d.default_sample_rate:>7.0f}  {d.name} ({d.host_api}){mark}"
        )
    lines.append("< default input, > default output (`--input default` / `--output default`)")
    return "\n".join(lines)


class AudioDevice:
    """Capture and/or playback of mono int16 frames on PortAudio devices.

    Use as ``async with AudioDevice(...) as dev:`` then ``await dev.read_frame()`` and
    ``dev.write_frame(pcm)``. ``input_device``/``output_device`` take what
    :func:`resolve_device` accepts.
    """

    def __init__(
        self,
        *,
        rate: int = 48000,
        frame_samples: int = 960,
        capture: bool = True,
        playback: bool = True,
        input_device: str | int | None = None,
        output_device: str | int | None = None,
        max_queue_frames: int = 25,
        quiet: bool = True,
    ) -> None:
        if not capture and not playback:
            raise ValueError("need capture, playback or both")
        if rate <= 0 or frame_samples <= 0 or max_queue_frames < 1:
            raise ValueError("rate, frame_samples and max_queue_frames must be positive")
        self.rate = rate
        self.frame_samples = frame_samples
        self.frame_bytes = 2 * frame_samples
        self._capture = capture
        self._playback = playback
        self._input_spec = input_device
        self._output_spec = output_device
        self._max_queue = max_queue_frames
        self._quiet = quiet
        self.stats = AudioStats()
        self.input_level_dbfs = SILENCE_DBFS
        self._pa: Any = None
        self._in_stream: Any = None
        self._out_stream: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._in_queue: asyncio.Queue[bytes] | None = None
        self._out_frames: collections.deque[bytes] = collections.deque()
        self._out_pending = bytearray()
        self._lock = threading.Lock()
        self._closed = False
        self._pa_continue = 0

    # ----------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> AudioDevice:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Initialise PortAudio and start the streams (in a worker thread)."""
        self._loop = asyncio.get_running_loop()
        self._in_queue = asyncio.Queue(maxsize=self._max_queue)
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        pyaudio = _pyaudio()
        self._pa_continue = int(pyaudio.paContinue)
        with quiet_stderr(self._quiet):
            self._pa = pyaudio.PyAudio()
        try:
            devices = _list(self._pa)
            in_idx = resolve_device(devices, self._input_spec, output=False)
            out_idx = resolve_device(devices, self._output_spec, output=True)
            common = {
                "format": pyaudio.paInt16,
                "channels": 1,
                "rate": self.rate,
                "frames_per_buffer": self.frame_samples,
            }
            with quiet_stderr(self._quiet):
                if self._capture:
                    self._in_stream = self._pa.open(
                        input=True,
                        input_device_index=in_idx,
                        stream_callback=self._on_capture,
                        **common,
                    )
                if self._playback:
                    self._out_stream = self._pa.open(
                        output=True,
                        output_device_index=out_idx,
                        stream_callback=self._on_playback,
                        **common,
                    )
        except (OSError, ValueError) as exc:
            self._close_sync()
            raise AudioDeviceError(f"cannot open sound device: {exc}") from exc
        except AudioDeviceError:
            self._close_sync()
            raise

    async def close(self) -> None:
        """Stop the streams and release PortAudio (idempotent)."""
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._close_sync)
        if self._in_queue is not None:
            # wake a pending read_frame(); it raises AudioDeviceError
            while self._in_queue.full():
                self._in_queue.get_nowait()
            self._in_queue.put_nowait(b"")

    def _close_sync(self) -> None:
        for stream in (self._in_stream, self._out_stream):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.stop_stream()
                stream.close()
        self._in_stream = self._out_stream = None
        if self._pa is not None:
            self._pa.terminate()
            self._pa = None

    # --------------------------------------------------------------------- I/O

    async def read_frame(self) -> bytes:
        """The next captured frame (``frame_samples`` int16 samples)."""
        if self._in_queue is None or not self._capture:
            raise AudioDeviceError("capture is not running")
        if self._closed and self._in_queue.empty():
            raise AudioDeviceError("the device is closed")
        frame = await self._in_queue.get()
        if not frame:
            self._in_queue.put_nowait(b"")  # keep waking later readers
            raise AudioDeviceError("the device is closed")
        return frame

    def write_frame(self, pcm: bytes) -> None:
        """Queue int16 PCM for playback (any length; never blocks)."""
        if not self._playback:
            raise AudioDeviceError("playback is not enabled")
        if len(pcm) % 2:
            raise ValueError("PCM must be whole int16 samples")
        with self._lock:
            if len(self._out_frames) >= self._max_queue:
                self._out_frames.popleft()
                self.stats.playback_overflows += 1
            self._out_frames.append(bytes(pcm))

    @property
    def playback_queued_frames(self) -> float:
        """Frames waiting to be played (fractional while one is partly played)."""
        with self._lock:
            queued = sum(len(f) for f in self._out_frames) + len(self._out_pending)
        return queued / self.frame_bytes

    # --------------------------------------------- PortAudio threads (callbacks)

    def _on_capture(
        self, in_data: bytes | None, frame_count: int, time_info: Any, status: int
    ) -> tuple[None, int]:
        self.stats.status_flags |= status
        if in_data:
            self.stats.frames_captured += 1
            self.input_level_dbfs = level_dbfs(in_data)
            loop = self._loop
            if loop is not None and not loop.is_closed():
                with contextlib.suppress(RuntimeError):  # loop closing
                    loop.call_soon_threadsafe(self._deliver, bytes(in_data))
        return None, self._pa_continue

    def _deliver(self, frame: bytes) -> None:
        """Runs on the event loop thread."""
        q = self._in_queue
        if q is None or self._closed:
            return
        if q.full():
            q.get_nowait()
            self.stats.capture_overruns += 1
        q.put_nowait(frame)

    def _on_playback(
        self, in_data: bytes | None, frame_count: int, time_info: Any, status: int
    ) -> tuple[bytes, int]:
        self.stats.status_flags |= status
        need = 2 * frame_count
        with self._lock:
            buf = self._out_pending
            while len(buf) < need and self._out_frames:
                buf += self._out_frames.popleft()
            if len(buf) >= need:
                out = bytes(buf[:need])
                del buf[:need]
                self.stats.frames_played += 1
            else:
                out = bytes(buf) + b"\0" * (need - len(buf))
                buf.clear()
                self.stats.playback_underruns += 1
        return out, self._pa_continue
