"""Voice quality measurement: alignment, PESQ (ITU-T P.862) and STOI of a degraded signal.

PESQ and STOI come from the optional packages ``pesq`` and ``pystoi`` (the ``measure`` extra); the
ITU reference code inside ``pesq`` is not licensed for commercial use, so it is never a runtime
dependency of a call. Alignment uses only numpy/scipy.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy.signal import correlate, correlation_lags

from qphone.audio.wav import resample

PesqMode = Literal["wb", "nb"]
INSTALL_HINT = "pip install 'qphone[measure]'"


class MeasurementUnavailable(ImportError):
    """An optional measurement package is missing."""


class QualityError(ValueError):
    """The signals cannot be measured (too short, silent, no speech found...)."""


@dataclasses.dataclass(frozen=True)
class Alignment:
    """How a degraded signal lines up with its reference.

    ``delay`` samples: ``degraded[n + delay]`` corresponds to ``reference[n]`` (positive when the
    degraded signal lags). ``correlation`` is the normalised cross-correlation of the overlapping
    parts after alignment (1.0 = identical up to gain).
    """

    delay: int
    correlation: float
    rate: int

    @property
    def delay_ms(self) -> float:
        return 1000.0 * self.delay / self.rate


@dataclasses.dataclass(frozen=True)
class QualityReport:
    """Quality of ``degraded`` against ``reference`` after alignment."""

    delay_ms: float
    correlation: float
    pesq: float | None
    pesq_mode: PesqMode | None
    stoi: float | None


def _as_float(x: npt.ArrayLike) -> npt.NDArray[np.float64]:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise QualityError(f"expected a mono signal, got shape {a.shape}")
    return a


def normalized_correlation(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """Cosine similarity of two equal-length signals (0.0 if either is silent)."""
    x, y = _as_float(a), _as_float(b)
    n = min(len(x), len(y))
    x, y = x[:n], y[:n]
    den = float(np.sqrt(np.dot(x, x) * np.dot(y, y)))
    return float(np.dot(x, y) / den) if den > 0 else 0.0


def estimate_delay(
    reference: npt.ArrayLike, degraded: npt.ArrayLike, rate: int, max_delay_s: float = 1.0
) -> Alignment:
    """Cross-correlation (FFT) delay estimate of ``degraded`` relative to ``reference``."""
    ref, deg = _as_float(reference), _as_float(degraded)
    if len(ref) == 0 or len(deg) == 0:
        raise QualityError("empty signal")
    corr = correlate(deg, ref, mode="full", method="fft")
    lags = correlation_lags(len(deg), len(ref), mode="full")
    max_lag = int(max_delay_s * rate)
    window = np.abs(lags) <= max_lag
    if not window.any():
        raise QualityError("no lag within max_delay_s")
    best = int(lags[window][np.argmax(corr[window])])
    r, d = overlap(ref, deg, best)
    return Alignment(delay=best, correlation=normalized_correlation(r, d), rate=rate)


def overlap(
    reference: npt.NDArray[Any], degraded: npt.NDArray[Any], delay: int
) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """The overlapping parts of both signals once ``degraded`` is shifted back by ``delay``."""
    if delay >= 0:
        d = degraded[delay:]
        r = reference
    else:
        d = degraded
        r = reference[-delay:]
    n = min(len(r), len(d))
    return r[:n], d[:n]


def align(
    reference: npt.ArrayLike, degraded: npt.ArrayLike, rate: int, max_delay_s: float = 1.0
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], Alignment]:
    """Aligned, equal-length copies of both signals and the alignment found."""
    ref, deg = _as_float(reference), _as_float(degraded)
    a = estimate_delay(ref, deg, rate, max_delay_s)
    r, d = overlap(ref, deg, a.delay)
    return r, d, a


def pesq_score(
    reference: npt.ArrayLike, degraded: npt.ArrayLike, rate: int, mode: PesqMode | None = None
) -> tuple[float, PesqMode]:
    """PESQ MOS-LQO; wideband at 16 kHz (default when rate >= 16 kHz), narrowband at 8 kHz.

    Both signals are resampled to the mode's rate (16000 for 'wb', 8000 for 'nb'). They should
    already be aligned to within PESQ's own search range (it realigns utterances itself).
    """
    try:
        from pesq import PesqError
        from pesq import pesq as _pesq
    except ImportError as exc:
        raise MeasurementUnavailable(f"PESQ needs the 'pesq' package: {INSTALL_HINT}") from exc
    chosen: PesqMode = mode or ("wb" if rate >= 16000 else "nb")
    fs = 16000 if chosen == "wb" else 8000
    if chosen == "wb" and rate < 16000:
        raise QualityError(f"wideband PESQ needs at least 16 kHz audio, got {rate} Hz")
    ref = resample(_as_float(reference), rate, fs)
    deg = resample(_as_float(degraded), rate, fs)
    if not np.any(ref) or not np.any(deg):
        raise QualityError("PESQ needs speech in both signals; one of them is digital silence")
    try:
        score = float(_pesq(fs, ref, deg, chosen, on_error=PesqError.RAISE_EXCEPTION))
    except Exception as exc:  # pesq raises its own classes (NoUtterancesError, ...)
        raise QualityError(f"PESQ could not score these signals: {exc}") from exc
    return score, chosen


def stoi_score(
    reference: npt.ArrayLike, degraded: npt.ArrayLike, rate: int, extended: bool = False
) -> float:
    """Short-Time Objective Intelligibility (0..1) of aligned, equal-length signals."""
    try:
        from pystoi import stoi as _stoi
    except ImportError as exc:
        raise MeasurementUnavailable(f"STOI needs the 'pystoi' package: {INSTALL_HINT}") from exc
    ref, deg = _as_float(reference), _as_float(degraded)
    n = min(len(ref), len(deg))
    return float(_stoi(ref[:n], deg[:n], rate, extended=extended))


def measure(
    reference: npt.ArrayLike,
    degraded: npt.ArrayLike,
    rate: int,
    *,
    mode: PesqMode | None = None,
    max_delay_s: float = 1.0,
    with_pesq: bool = True,
    with_stoi: bool = True,
) -> QualityReport:
    """Align ``degraded`` to ``reference`` (same rate) and score it."""
    ref, deg, a = align(reference, degraded, rate, max_delay_s)
    p: float | None = None
    pm: PesqMode | None = None
    if with_pesq:
        p, pm = pesq_score(ref, deg, rate, mode)
    s = stoi_score(ref, deg, rate) if with_stoi else None
    return QualityReport(
        delay_ms=a.delay_ms, correlation=a.correlation, pesq=p, pesq_mode=pm, stoi=s
    )
