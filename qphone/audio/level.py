"""The signal level of int16 PCM: the status line, the sound devices' meter, silence tests."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

#: level reported for digital silence (and the floor of every other level)
SILENCE_DBFS = -120.0


def level_dbfs(pcm: bytes | bytearray | npt.NDArray[np.int16] | npt.NDArray[np.float64]) -> float:
    """RMS level in dBFS of int16 PCM (bytes or samples; float samples on the int16 scale).

    A full-scale square wave is 0 dBFS; the result is never below SILENCE_DBFS.
    """
    x = np.frombuffer(pcm, dtype="<i2") if isinstance(pcm, bytes | bytearray) else pcm
    if len(x) == 0:
        return SILENCE_DBFS
    rms = math.sqrt(float(np.mean(np.square(x, dtype=np.float64))))
    if rms <= 0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 20.0 * math.log10(rms / 32768.0))
