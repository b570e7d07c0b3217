"""WAV file input/output as mono int16 PCM at a chosen rate, and framing helpers.

Reading accepts 8/16/24/32-bit integer PCM WAV (any rate, any channel count); channels are
averaged to mono and the rate is converted with :func:`scipy.signal.resample_poly` (polyphase
FIR, Kaiser window), so a 48 kHz sample can feed a 16 kHz codec and vice versa.
"""

from __future__ import annotations

import dataclasses
import struct
import wave
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy.signal import resample_poly

Pcm = npt.NDArray[np.int16]

#: refuse WAV files longer than this (a bounded reader: samples and tests are seconds long)
MAX_SECONDS = 3600


class WavFormatError(ValueError):
    """The file is not a PCM WAV this module can read."""


@dataclasses.dataclass(frozen=True)
class WavInfo:
    """Format of a WAV file as found on disk."""

    sample_rate: int
    channels: int
    sample_width: int
    frames: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


# what the wave module raises for a file that is not a (readable) WAV file
_UNREADABLE = (wave.Error, EOFError, RuntimeError, ValueError, struct.error)
_FORMAT_NAMES = {3: "32/64-bit float", 6: "A-law", 7: "mu-law", 0xFFFE: "WAVE_FORMAT_EXTENSIBLE"}


def _format_tag(path: str | Path) -> int | None:
    """The ``fmt `` chunk's format tag of a RIFF/WAVE file (None if it has none)."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            for _ in range(64):  # a bounded walk over the chunks
                chunk = f.read(8)
                if len(chunk) < 8:
                    return None
                size = int.from_bytes(chunk[4:], "little")
                if chunk[:4] == b"fmt ":
                    tag = f.read(2)
                    return int.from_bytes(tag, "little") if len(tag) == 2 else None
                f.seek(size + (size & 1), 1)
    except OSError:
        return None
    return None


def _not_pcm(path: str | Path, exc: Exception) -> WavFormatError:
    tag = _format_tag(path)
    if tag is not None and tag != 1:
        name = _FORMAT_NAMES.get(tag, f"format {tag}")
        return WavFormatError(
            f"{path}: {name} WAV is not supported: convert it to 16-bit PCM "
            f"(e.g. `sox {path} -b 16 -e signed-integer out.wav`)"
        )
    if tag is None:
        return WavFormatError(
            f"{path}: not a WAV file (no RIFF/WAVE header with a fmt chunk): give a PCM WAV file"
        )
    return WavFormatError(
        f"{path}: not a readable PCM WAV file ({exc}): give a PCM WAV file (8/16/24/32-bit)"
    )


def wav_info(path: str | Path) -> WavInfo:
    """Read only the header of a WAV file."""
    try:
        with wave.open(str(path), "rb") as w:
            return WavInfo(w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes())
    except _UNREADABLE as exc:
        raise _not_pcm(path, exc) from exc


def read_wav(path: str | Path, rate: int | None = None) -> tuple[Pcm, int]:
    """Read a WAV file as mono int16, resampled to ``rate`` if given.

    Returns ``(samples, sample_rate)``.
    """
    try:
        with wave.open(str(path), "rb") as w:
            src_rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
            nframes = w.getnframes()
            if nframes > MAX_SECONDS * src_rate:
                raise WavFormatError(f"{path}: longer than {MAX_SECONDS} s")
            raw = w.readframes(nframes)
    except _UNREADABLE as exc:
        raise _not_pcm(path, exc) from exc
    if channels < 1 or src_rate <= 0:
        raise WavFormatError(f"{path}: bad header ({channels} channels, {src_rate} Hz)")
    data = _to_float(raw, width, path).reshape(-1, channels).mean(axis=1)
    out_rate = src_rate if rate is None else rate
    if out_rate != src_rate:
        data = resample(data, src_rate, out_rate)
    return to_int16(data), out_rate


def write_wav(path: str | Path, pcm: Pcm | bytes, rate: int, channels: int = 1) -> None:
    """Write int16 PCM (an array or raw little-endian bytes) as a WAV file."""
    raw = pcm if isinstance(pcm, bytes | bytearray) else np.asarray(pcm, dtype="<i2").tobytes()
    if len(raw) % (2 * channels):
        raise ValueError("PCM length is not a whole number of int16 frames")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(raw)


def resample(data: npt.ArrayLike, src_rate: int, dst_rate: int) -> npt.NDArray[np.float64]:
    """Rational-ratio resampling (float in, float out)."""
    x = np.asarray(data, dtype=np.float64)
    if src_rate == dst_rate:
        return x
    ratio = Fraction(dst_rate, src_rate)
    return np.asarray(resample_poly(x, ratio.numerator, ratio.denominator), dtype=np.float64)


def to_int16(data: npt.ArrayLike) -> Pcm:
    """Round and clip float samples (int16 scale) to int16."""
    x = np.rint(np.asarray(data, dtype=np.float64))
    return np.clip(x, -32768, 32767).astype(np.int16)


def iter_frames(pcm: Pcm, frame_samples: int, *, pad: bool = True) -> Iterator[bytes]:
    """Yield consecutive frames of ``frame_samples`` samples as int16 bytes.

    The last partial frame is zero-padded (``pad=True``) or dropped.
    """
    if frame_samples <= 0:
        raise ValueError("frame_samples must be positive")
    x = np.asarray(pcm, dtype="<i2")
    full = len(x) // frame_samples
    for i in range(full):
        yield x[i * frame_samples : (i + 1) * frame_samples].tobytes()
    rest = len(x) - full * frame_samples
    if rest and pad:
        tail = np.zeros(frame_samples, dtype="<i2")
        tail[:rest] = x[full * frame_samples :]
        yield tail.tobytes()


def frames_to_pcm(frames: list[bytes] | Iterator[bytes]) -> Pcm:
    """Concatenate int16 frames into one array."""
    return np.frombuffer(b"".join(frames), dtype="<i2").astype(np.int16)


def _to_float(raw: bytes, width: int, path: str | Path) -> npt.NDArray[np.float64]:
    """Integer PCM bytes to float64 at int16 scale."""
    if width == 1:  # unsigned 8-bit
        return (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) * 256.0
    if width == 2:
        return np.frombuffer(raw, dtype="<i2").astype(np.float64)
    if width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        return v.astype(np.float64) / 256.0
    if width == 4:
        return np.frombuffer(raw, dtype="<i4").astype(np.float64) / 65536.0
    raise WavFormatError(f"{path}: unsupported sample width {width} bytes")
