"""Test signals: sine tones of a given RMS level."""

from __future__ import annotations

import math

import numpy as np


def tone(freq: float, seconds: float, rms_dbfs: float, rate: int = 48000) -> np.ndarray:
    """A sine of ``freq`` Hz whose RMS level is ``rms_dbfs`` (int16 samples at ``rate``)."""
    t = np.arange(int(seconds * rate)) / rate
    amp = 32768 * 10 ** (rms_dbfs / 20) * math.sqrt(2)
    return np.round(amp * np.sin(2 * math.pi * freq * t)).astype(np.int16)
