"""Time-stretching of one decoded frame by a few milliseconds, for the jitter buffer's delay.

A jitter buffer that follows the network's jitter must lengthen or shorten its playout delay
without dropping speech: like WebRTC NetEq's *accelerate* and *preemptive expand*, the frame
about to be played is made a little shorter or longer.  Cutting or repeating a few milliseconds
in the middle of a voiced sound is audible (the two ends of the cut are out of phase), so a
frame is stretched only where it is quiet: at its quietest stretch of ``samples`` (a pause
between words, the closure of a stop), when that part is at least ``QUIET_DB`` below the
frame's loudest part or below ``SILENT_DBFS``; the cut or the repeat is cross-faded so the
waveform stays continuous.  A frame without such a part is left as it is (:func:`stretch`
returns it unchanged: the caller tells the jitter buffer).  A frame that is silent as a whole
(:func:`is_silent`: a pause between utterances) may change by up to half its length: cutting
or repeating part of a pause is not heard, which is how the jitter buffer's delay follows its
target without time-stretching speech (:func:`stretch_silence`).

Sans-I/O: int16 PCM in, int16 PCM out.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

MAX_FRACTION = 0.25  # a frame changes by at most a quarter of its length
SILENT_MAX_FRACTION = 0.5  # ... a silent one by at most half
QUIET_DB = 20.0  # the part cut or repeated is this much quieter than the frame's loudest part
SILENT_DBFS = -50.0  # ... or this quiet in absolute terms
FULL_SCALE = 32768.0


def stretch(pcm: bytes, samples: int, channels: int = 1, *, anywhere: bool = False) -> bytes:
    """``pcm`` (int16, interleaved ``channels``) made ``samples`` sample frames longer (> 0) or
    shorter (< 0) at its quietest part, or unchanged when no part is quiet enough (``anywhere``:
    at the quietest part whatever its level, for concealment and comfort noise).  Refused
    (ValueError) beyond :data:`MAX_FRACTION` of the frame (:data:`SILENT_MAX_FRACTION` of a
    silent one)."""
    if channels < 1 or len(pcm) % (2 * channels):
        raise ValueError("PCM must hold whole int16 sample frames")
    if samples == 0:
        return pcm
    x = np.frombuffer(pcm, dtype="<i2").reshape(-1, channels).astype(np.float64)
    n, m = len(x), abs(samples)
    if m > MAX_FRACTION * n and not (m <= SILENT_MAX_FRACTION * n and _silent(x)):
        raise ValueError(f"cannot stretch a frame of {n} samples by {samples}")
    p = _quiet_join(x.mean(axis=1), m, anywhere)
    if p is None:
        return pcm
    a, b = x[p : p + m], x[p + m : p + 2 * m]
    ramp = (np.arange(1, m + 1, dtype=np.float64) / (m + 1))[:, None]
    if samples < 0:  # shorter: a fades into b, the m samples between them go
        out = np.concatenate((x[:p], a * (1 - ramp) + b * ramp, x[p + 2 * m :]))
    else:  # longer: after a, b fades into a, and a b follows again: m samples more
        out = np.concatenate((x[: p + m], b * (1 - ramp) + a * ramp, x[p + m :]))
    return np.clip(np.rint(out), -32768, 32767).astype("<i2").tobytes()


def _quiet_join(mono: npt.NDArray[np.float64], m: int, anywhere: bool) -> int | None:
    """Start p of the quietest 2m samples x[p:p+2m], or None when they are not quiet enough."""
    power = np.concatenate(([0.0], np.cumsum(mono * mono)))
    span = 2 * m
    energy = (power[span:] - power[:-span]) / span  # mean power of x[p:p+2m] for every p
    p = int(np.argmin(energy))
    if anywhere:
        return p
    quiet, loud = float(energy[p]), float(energy.max())
    silent = (FULL_SCALE * 10 ** (SILENT_DBFS / 20)) ** 2
    if quiet <= loud * 10 ** (-QUIET_DB / 10) or quiet <= silent:
        return p
    return None


def _silent(x: npt.NDArray[np.float64]) -> bool:
    return bool(np.mean(x * x) <= (FULL_SCALE * 10 ** (SILENT_DBFS / 20)) ** 2)


def is_silent(pcm: bytes) -> bool:
    """The frame (int16) as a whole is at or below :data:`SILENT_DBFS` (RMS)."""
    return _silent(np.frombuffer(pcm, dtype="<i2").astype(np.float64))


def stretch_silence(pcm: bytes, samples: int, channels: int = 1) -> bytes:
    """``pcm`` made ``samples`` sample frames longer or shorter (up to half its length) if it is
    silent as a whole (:func:`is_silent`), else unchanged: the same result as :func:`stretch`
    gives for a silent frame."""
    if samples == 0 or not is_silent(pcm):
        return pcm
    return stretch(pcm, samples, channels, anywhere=True)
