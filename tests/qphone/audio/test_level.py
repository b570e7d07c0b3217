"""qphone.audio.level: the RMS level in dBFS, floored at SILENCE_DBFS."""

from __future__ import annotations

import numpy as np
import pytest

from qphone.audio.level import SILENCE_DBFS, level_dbfs
from tests.support.signals import tone


def test_level_dbfs() -> None:
    assert level_dbfs(b"") == SILENCE_DBFS
    assert level_dbfs(np.zeros(960, dtype=np.int16).tobytes()) == SILENCE_DBFS
    assert level_dbfs(tone(1000, 0.1, -12.0).tobytes()) == pytest.approx(-12.0, abs=0.05)
    square = np.tile(np.array([32767, -32768], dtype=np.int16), 480)
    assert level_dbfs(square.tobytes()) == pytest.approx(0.0, abs=0.01)


def test_bytes_and_arrays_agree_and_the_floor_holds() -> None:
    x = tone(440, 0.02, -30.0)
    assert level_dbfs(x) == level_dbfs(x.tobytes()) == level_dbfs(bytearray(x.tobytes()))
    one_lsb = np.zeros(960, dtype=np.int16)
    one_lsb[0] = 1  # RMS about -120.1 dBFS: below the floor
    assert level_dbfs(one_lsb) == SILENCE_DBFS
