"""WAV file input/output as mono int16 PCM at a chosen rate, and framing helpers.

Reading accepts 8/16/24/32-bit integer PCM and 32/64-bit float WAV, plain or
WAVE_FORMAT_EXTENSIBLE (any rate from 1 to 768 kHz, 1 to 32 channels; the header is parsed by
:mod:`qphone.audio.wavheader`, strictly: a truncated file is refused); channels are averaged to
mono and the rate is converted with :func:`scipy.signal.resample_poly` (polyphase
FIR, Kaiser window), so a 48 kHz sample can feed a 16 kHz codec and vice versa.
"""

from __future__ import annotations

import dataclasses
import os
import wave
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy.signal import resample_poly

from qphone.audio.wavheader import (
    MAX_HEADER_BYTES,
    Encoding,
    WavFormatError,
    WavLayout,
    parse_header,
)

__all__ = [
    "Encoding",
    "Pcm",
    "WavFormatError",
    "WavInfo",
    "frames_to_pcm",
    "iter_frames",
    "read_wav",
    "resample",
    "to_int16",
    "wav_info",
    "write_wav",
]

Pcm = npt.NDArray[np.int16]

#: refuse WAV files longer than this (a bounded reader: samples and tests are seconds long)
MAX_SECONDS = 3600


@dataclasses.dataclass(frozen=True)
class WavInfo:
    """Format of a WAV file as found on disk."""

    sample_rate: int
    channels: int
    sample_width: int
    frames: int
    encoding: Encoding = Encoding.PCM

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


def _layout(path: str | Path) -> WavLayout:
    """The file's header, parsed (:func:`~qphone.audio.wavheader.parse_header`); a refusal
    names the file.  OSError (missing, unreadable) passes through."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(MAX_HEADER_BYTES)
    try:
        return parse_header(head, size)
    except WavFormatError as exc:
        raise WavFormatError(f"{path}: {exc}") from None


def wav_info(path: str | Path) -> WavInfo:
    """Read only the header of a WAV file (and check the file holds what it promises)."""
    h = _layout(path)
    return WavInfo(h.sample_rate, h.channels, h.sample_width, h.frames, h.encoding)


def read_wav(path: str | Path, rate: int | None = None) -> tuple[Pcm, int]:
    """Read a WAV file as mono int16, resampled to ``rate`` if given.

    Returns ``(samples, sample_rate)``.
    """
    h = _layout(path)
    if h.frames > MAX_SECONDS * h.sample_rate:
        raise WavFormatError(f"{path}: a WAV file longer than {MAX_SECONDS} s: cut it shorter")
    with open(path, "rb") as f:
        f.seek(h.data_offset)
        raw = f.read(h.frames * h.sample_width * h.channels)
    data = _to_float(raw, h).reshape(-1, h.channels).mean(axis=1)
    out_rate = h.sample_rate if rate is None else rate
    if out_rate != h.sample_rate:
        data = resample(data, h.sample_rate, out_rate)
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


def _to_float(raw: bytes, h: WavLayout) -> npt.NDArray[np.float64]:
    """Sample bytes to float64 at int16 scale (full scale +-32768)."""
    if h.encoding is Encoding.FLOAT:
        x = np.frombuffer(raw, dtype="<f4" if h.bits == 32 else "<f8").astype(np.float64)
        return np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0) * 32768.0
    if h.bits == 8:  # unsigned 8-bit
        return (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) * 256.0
    if h.bits == 16:
        return np.frombuffer(raw, dtype="<i2").astype(np.float64)
    if h.bits == 24:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        return v.astype(np.float64) / 256.0
    return np.frombuffer(raw, dtype="<i4").astype(np.float64) / 65536.0
