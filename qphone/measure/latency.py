"""Mouth-to-ear latency from timelines, by cross-correlation: one method for every pipeline.

A pipeline under test is described by two timelines (:class:`Timelines`):

* input: the mono int16 signal that was captured, and for each input frame the wall-clock
  (``time.monotonic()``) capture time of its first sample;
* output: the frames that were played out, each with the wall-clock time its first sample was
  handed to the sink (the playout time).

The measurement never looks at RTP timestamps or sequence numbers, so it treats qphone's own
pipeline and aiortc's stock audio path alike, and it includes everything that delays the sound:
packetization, codec look-ahead, network, jitter buffer and decoding.

Method (:func:`measure_latency`): both signals are low-passed and resampled to
``analysis_rate``.  The output stream (frames concatenated in playout order) is cut into windows
of ``window_ms`` every ``hop_ms``.  A window that is mostly silent (fewer than ``min_audible`` of
its 20 ms blocks above ``silence_dbfs``) is skipped.  For the others, the input
position the window carries is the peak of the normalized cross-correlation over a bounded
range of candidate latencies: ``[min_latency_ms, max_latency_ms]`` for the first window, then
the running estimate +- ``search_ms``; a window whose peak is below ``min_correlation`` is
skipped.  The match maps every output sample of the window to an input sample; each output
frame of the window that is audible and correlates with its mapped input (``frame_correlation``)
gives the latency *playout time of the frame's first sample - capture time of the input sample
it carries*, and the window's latency is the median of those (so a frame at the edge of a gap,
where a jitter buffer dropped or inserted audio, does not move it).  The result holds the latency
of each window with its wall time and the p50/p95/p99/max over windows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.signal import correlate

from qphone.audio.level import level_dbfs
from qphone.audio.wav import resample

Pcm = npt.NDArray[np.int16]
Floats = npt.NDArray[np.float64]

INT16_FULL_SCALE = 32768.0


class TimelineError(ValueError):
    """The timelines are inconsistent (lengths, rates, times)."""


@dataclass(frozen=True)
class Timelines:
    """What went in (with capture times) and what came out (with playout times)."""

    rate: int
    input_pcm: Pcm
    """Mono int16 at ``rate``, contiguous: frame ``i`` is ``input_pcm[i*F:(i+1)*F]``."""
    input_frame_samples: int
    input_times: Floats
    """Capture time of the first sample of each input frame (monotonic seconds)."""
    output_times: Floats
    """Playout time of the first sample of each output frame (monotonic seconds)."""
    output_frames: tuple[Pcm, ...]
    """The played-out frames (mono int16 at ``rate``), in playout order."""

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.input_frame_samples <= 0:
            raise TimelineError("rate and input_frame_samples must be positive")
        n_in = math.ceil(len(self.input_pcm) / self.input_frame_samples)
        if len(self.input_times) != n_in:
            raise TimelineError(
                f"{len(self.input_times)} input times for {n_in} input frames of "
                f"{self.input_frame_samples} samples"
            )
        if len(self.output_times) != len(self.output_frames):
            raise TimelineError(
                f"{len(self.output_times)} output times for {len(self.output_frames)} frames"
            )
        for name, t in (("input_times", self.input_times), ("output_times", self.output_times)):
            if len(t) and not np.all(np.isfinite(t)):
                raise TimelineError(f"{name} holds a non-finite time")
        if len(self.input_times) > 1 and np.any(np.diff(self.input_times) <= 0):
            raise TimelineError("input_times must increase strictly")

    @classmethod
    def build(
        cls,
        rate: int,
        input_pcm: npt.ArrayLike,
        input_frame_samples: int,
        input_times: npt.ArrayLike,
        output: Sequence[tuple[float, npt.ArrayLike]],
    ) -> Timelines:
        """From plain sequences; ``output`` is a list of (playout time, pcm frame)."""
        return cls(
            rate=rate,
            input_pcm=np.asarray(input_pcm, dtype=np.int16),
            input_frame_samples=input_frame_samples,
            input_times=np.asarray(input_times, dtype=np.float64),
            output_times=np.asarray([t for t, _ in output], dtype=np.float64),
            output_frames=tuple(np.asarray(p, dtype=np.int16) for _, p in output),
        )


@dataclass(frozen=True)
class LatencyParams:
    window_ms: float = 300.0
    hop_ms: float = 100.0
    search_ms: float = 400.0
    """Search +- this much around the running estimate (after the first match)."""
    min_latency_ms: float = 0.0
    max_latency_ms: float = 1000.0
    """Bounds of every search; the first window searches all of it."""
    silence_dbfs: float = -45.0
    """A 20 ms block (or output frame) whose RMS is below this is silent."""
    min_audible: float = 0.5
    """A window with fewer audible 20 ms blocks than this fraction is skipped as silent (an
    onset after silence is too short to match unambiguously: voiced speech repeats every
    pitch period)."""
    min_correlation: float = 0.6
    """Normalized correlation a window's peak must reach."""
    frame_correlation: float = 0.5
    """... and each output frame with its mapped input, to count in the window's median."""
    analysis_rate: int = 16000

    def __post_init__(self) -> None:
        if not 0 <= self.min_audible <= 1:
            raise ValueError("min_audible is a fraction in [0, 1]")
        if not 0 < self.hop_ms <= self.window_ms:
            raise ValueError("need 0 < hop_ms <= window_ms")
        if self.search_ms <= 0 or self.max_latency_ms <= self.min_latency_ms:
            raise ValueError("need search_ms > 0 and max_latency_ms > min_latency_ms")
        if not -1.0 <= self.frame_correlation <= 1.0 or not -1.0 <= self.min_correlation <= 1.0:
            raise ValueError("correlation thresholds lie in [-1, 1]")
        if self.analysis_rate <= 0:
            raise ValueError("analysis_rate must be positive")


@dataclass(frozen=True)
class LatencyResult:
    times: Floats
    """Wall time (playout) of each measured window's centre."""
    latencies_ms: Floats
    correlations: Floats
    windows_total: int
    skipped_silent: int
    skipped_weak: int
    percentiles: dict[str, float] = field(default_factory=dict)

    @property
    def windows(self) -> int:
        return len(self.latencies_ms)

    @property
    def p50(self) -> float:
        return self.percentiles["p50"]

    @property
    def p95(self) -> float:
        return self.percentiles["p95"]

    @property
    def p99(self) -> float:
        return self.percentiles["p99"]

    @property
    def max(self) -> float:
        return self.percentiles["max"]

    def summary(self) -> dict[str, Any]:
        return {
            **{k: round(v, 2) if math.isfinite(v) else None for k, v in self.percentiles.items()},
            "windows": self.windows,
            "windows_total": self.windows_total,
            "skipped_silent": self.skipped_silent,
            "skipped_weak": self.skipped_weak,
        }


def percentiles(values: npt.ArrayLike) -> dict[str, float]:
    """p50/p95/p99/max (linear interpolation); NaN for no values."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {"p50": math.nan, "p95": math.nan, "p99": math.nan, "max": math.nan}
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "max": float(a.max())}


def _audible_fraction(x: Floats, block: int, silence_dbfs: float) -> float:
    n = len(x) // block
    if n == 0:
        return 1.0 if level_dbfs(x) >= silence_dbfs else 0.0
    blocks = x[: n * block].reshape(n, block)
    rms = np.sqrt(np.mean(blocks * blocks, axis=1)) / INT16_FULL_SCALE
    threshold = 10 ** (silence_dbfs / 20)
    return float(np.count_nonzero(rms >= threshold)) / n


class _Clock:
    """Sample index <-> wall time for a sequence of frames (start index, start time)."""

    def __init__(self, starts: npt.NDArray[np.int64], times: Floats, rate: int) -> None:
        self.starts = starts
        self.times = times
        self.rate = rate

    def time_of(self, index: float) -> float:
        k = max(0, int(np.searchsorted(self.starts, index, side="right")) - 1)
        return float(self.times[k]) + (index - float(self.starts[k])) / self.rate

    def index_at(self, t: float, frame_samples: int) -> float:
        """Input sample captured at ``t`` (clamped within the frame that holds ``t``)."""
        k = max(0, int(np.searchsorted(self.times, t, side="right")) - 1)
        within = (t - float(self.times[k])) * self.rate
        return float(self.starts[k]) + min(max(within, 0.0), float(frame_samples))


def measure_latency(tl: Timelines, params: LatencyParams | None = None) -> LatencyResult:
    """Mouth-to-ear latency per output window; see the module docstring for the method."""
    p = params or LatencyParams()
    rate, ar = tl.rate, p.analysis_rate
    scale = rate / ar  # full-rate samples per analysis sample
    f_in = tl.input_frame_samples
    x_full = tl.input_pcm.astype(np.float64)
    y_full = (
        np.concatenate([f.astype(np.float64) for f in tl.output_frames])
        if tl.output_frames
        else np.zeros(0)
    )
    x = resample(x_full, rate, ar)
    y = resample(y_full, rate, ar)
    in_clock = _Clock(np.arange(len(tl.input_times), dtype=np.int64) * f_in, tl.input_times, rate)
    out_lens = np.asarray([len(f) for f in tl.output_frames], dtype=np.int64)
    out_starts = np.concatenate([[0], np.cumsum(out_lens)[:-1]]).astype(np.int64)
    out_clock = _Clock(out_starts, tl.output_times, rate)

    win = max(1, round(p.window_ms * ar / 1000))
    hop = max(1, round(p.hop_ms * ar / 1000))
    block = max(1, round(0.02 * ar))
    csum = np.concatenate([[0.0], np.cumsum(x * x)])
    times: list[float] = []
    lats: list[float] = []
    corrs: list[float] = []
    total = silent = weak = 0
    estimate: float | None = None
    if len(tl.input_times) == 0 or len(y) < win or len(x) < win:
        return _result(times, lats, corrs, total, silent, weak)

    for ja in range(0, len(y) - win + 1, hop):
        total += 1
        w = y[ja : ja + win]
        if _audible_fraction(w, block, p.silence_dbfs) < max(p.min_audible, 1e-9):
            silent += 1
            continue
        lo_ms, hi_ms = p.min_latency_ms, p.max_latency_ms
        if estimate is not None:
            lo_ms, hi_ms = max(lo_ms, estimate - p.search_ms), min(hi_ms, estimate + p.search_ms)
        j_full = ja * scale
        t0 = out_clock.time_of(j_full)
        # a larger latency means an earlier input position
        first = in_clock.index_at(t0 - hi_ms / 1000, f_in) / scale
        last = in_clock.index_at(t0 - lo_ms / 1000, f_in) / scale
        pa_lo = max(0, math.floor(first))
        pa_hi = min(len(x) - win, math.ceil(last))
        if pa_hi < pa_lo:
            weak += 1
            continue
        seg = x[pa_lo : pa_hi + win]
        c = correlate(seg, w, mode="valid")
        energy = csum[pa_lo + win : pa_hi + win + 1] - csum[pa_lo : pa_hi + 1]
        norm = np.sqrt(np.maximum(energy, 0.0)) * math.sqrt(float(np.dot(w, w)))
        ncc = np.where(norm > 0, c / np.where(norm > 0, norm, 1.0), 0.0)
        best = int(np.argmax(ncc))
        peak = float(ncc[best])
        if peak < p.min_correlation:
            weak += 1
            continue
        frac = 0.0
        if 0 < best < len(ncc) - 1:  # parabolic refinement of the peak
            a, b, cc = float(ncc[best - 1]), peak, float(ncc[best + 1])
            den = a - 2 * b + cc
            if den < 0:
                frac = max(-0.5, min(0.5, 0.5 * (a - cc) / den))
        shift = (pa_lo + best + frac - ja) * scale  # input index = output index + shift
        lat = _window_latency(tl, p, y_full, x_full, out_starts, out_lens, in_clock, j_full, shift)
        if lat is None:
            weak += 1
            continue
        estimate = lat
        times.append(out_clock.time_of(j_full + win * scale / 2))
        lats.append(lat)
        corrs.append(peak)
    return _result(times, lats, corrs, total, silent, weak)


def _window_latency(
    tl: Timelines,
    p: LatencyParams,
    y_full: Floats,
    x_full: Floats,
    out_starts: npt.NDArray[np.int64],
    out_lens: npt.NDArray[np.int64],
    in_clock: _Clock,
    j_full: float,
    shift: float,
) -> float | None:
    """Median latency of the window's audible output frames that match the mapped input."""
    end = j_full + p.window_ms * tl.rate / 1000
    found: list[float] = []
    lo = int(np.searchsorted(out_starts, j_full, side="left"))
    hi = int(np.searchsorted(out_starts, end, side="left"))
    for k in range(lo, hi):
        s, n = int(out_starts[k]), int(out_lens[k])
        src = round(s + shift)
        if n == 0 or src < 0 or src + n > len(x_full):
            continue
        out = y_full[s : s + n]
        ref = x_full[src : src + n]
        if level_dbfs(out) < p.silence_dbfs:
            continue
        den = math.sqrt(float(np.dot(out, out)) * float(np.dot(ref, ref)))
        if den == 0 or float(np.dot(out, ref)) / den < p.frame_correlation:
            continue
        captured = in_clock.time_of(s + shift)
        found.append((float(tl.output_times[k]) - captured) * 1000)
    return float(np.median(found)) if found else None


def _result(
    times: list[float],
    lats: list[float],
    corrs: list[float],
    total: int,
    silent: int,
    weak: int,
) -> LatencyResult:
    return LatencyResult(
        times=np.asarray(times, dtype=np.float64),
        latencies_ms=np.asarray(lats, dtype=np.float64),
        correlations=np.asarray(corrs, dtype=np.float64),
        windows_total=total,
        skipped_silent=silent,
        skipped_weak=weak,
        percentiles=percentiles(lats),
    )


def timelines_from_call_logs(
    rate: int,
    input_pcm: npt.ArrayLike,
    frame_samples: int,
    send_log: Sequence[tuple[int, float]],
    output_pcm: npt.ArrayLike,
    playout_log: Sequence[tuple[int, float, str]],
    rtp_step: int | None = None,
    output_lengths: Sequence[int] | None = None,
) -> Timelines:
    """Timelines of a qphone call from what a :class:`~qphone.measure.callrecorder.CallRecorder`
    on each endpoint recorded.

    ``send_log`` is the sender's ``CallRecorder.send_log``: (frame timestamp, time the frame was
    complete); frame ``ts // rtp_step`` of ``input_pcm`` (zero-padded: a call goes on sending
    silence after its input ends) was captured from ``frame_samples / rate`` seconds before.
    Frames not sent (no key) get times interpolated between their neighbours.  ``output_pcm`` is
    what the receiver played (its OUT WAV), one ``frame_samples`` frame per entry of its
    ``CallRecorder.playout_log`` (timestamp, playout time, kind), in the same order; a slot the
    jitter buffer time-stretched is longer or shorter: ``output_lengths`` gives every slot's
    length in samples then (default: all ``frame_samples``).
    """
    step = rtp_step if rtp_step is not None else frame_samples * 48000 // rate
    if not send_log:
        raise TimelineError("the sender logged no frames (no recorder, or nothing sent?)")
    idx = np.asarray([ts // step for ts, _ in send_log], dtype=np.int64)
    done = np.asarray([t for _, t in send_log], dtype=np.float64)
    order = np.argsort(idx, kind="stable")
    idx, done = idx[order], done[order]
    n = int(idx.max()) + 1
    first_sample = np.interp(np.arange(n), idx, done - frame_samples / rate)
    pcm = np.zeros(n * frame_samples, dtype=np.int16)
    src = np.asarray(input_pcm, dtype=np.int16)[: n * frame_samples]
    pcm[: len(src)] = src
    out = np.asarray(output_pcm, dtype=np.int16)
    lengths = [frame_samples] * len(playout_log) if output_lengths is None else output_lengths
    if len(lengths) != len(playout_log):
        raise TimelineError(f"{len(lengths)} output lengths for {len(playout_log)} slots")
    starts = np.concatenate(([0], np.cumsum(lengths, dtype=np.int64)))
    frames = int(np.searchsorted(starts[1:], len(out), side="right"))
    return Timelines(
        rate=rate,
        input_pcm=pcm,
        input_frame_samples=frame_samples,
        input_times=first_sample,
        output_times=np.asarray([t for _, t, _ in playout_log[:frames]], dtype=np.float64),
        output_frames=tuple(out[starts[k] : starts[k + 1]] for k in range(frames)),
    )
