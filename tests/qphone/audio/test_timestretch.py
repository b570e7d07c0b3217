"""qphone.audio.timestretch: exact length change, only where quiet, continuous joins."""

from __future__ import annotations

import numpy as np
import pytest

from qphone.audio.timestretch import is_silent, stretch, stretch_silence

RATE = 48000
N = 960  # a 20 ms frame


def _frame(quiet_from: int | None = None) -> bytes:
    t = np.arange(N) / RATE
    x = 8000 * np.sin(2 * np.pi * 180 * t)
    if quiet_from is not None:
        x[quiet_from : quiet_from + 300] *= 0.01  # a pause between two sounds
    return x.astype("<i2").tobytes()


@pytest.mark.parametrize("samples", [-96, -48, 48, 96, -144])
def test_a_frame_with_a_quiet_part_changes_by_exactly_the_samples_asked(samples: int) -> None:
    pcm = _frame(quiet_from=500)
    out = np.frombuffer(stretch(pcm, samples), dtype="<i2").astype(np.float64)
    assert len(out) == N + samples
    # the joins add no jump larger than the frame already has
    x = np.frombuffer(pcm, dtype="<i2")
    assert np.abs(np.diff(out)).max() <= np.abs(np.diff(x.astype(np.float64))).max()
    # the loud parts before and after the pause are untouched
    assert np.array_equal(out[:400], x[:400])
    assert np.array_equal(out[-(N - 900) :], x[900:])


def test_a_loud_frame_is_left_alone_unless_anywhere() -> None:
    pcm = _frame()
    assert stretch(pcm, -96) is pcm  # no quiet part: not stretched (the caller is told)
    assert len(stretch(pcm, -96, anywhere=True)) == 2 * (N - 96)  # concealment: anywhere
    assert stretch(pcm, 0) is pcm


def test_refusals() -> None:
    with pytest.raises(ValueError):
        stretch(_frame(500), -241)  # more than a quarter of the frame
    with pytest.raises(ValueError):
        stretch(b"\x00" * 3, 1)  # not whole samples


@pytest.mark.parametrize("samples", [-480, -200, 200, 480])
def test_a_silent_frame_changes_by_up_to_half_its_length_a_voiced_one_not_at_all(
    samples: int,
) -> None:
    rng = np.random.default_rng(1)
    quiet = (rng.normal(0, 20, N)).astype("<i2").tobytes()  # about -64 dBFS: a pause
    assert is_silent(quiet) and not is_silent(_frame(quiet_from=500))
    out = stretch_silence(quiet, samples)
    assert len(out) == 2 * (N + samples)
    assert out == stretch(quiet, samples)  # what a replay of the slot gives
    voiced = _frame(quiet_from=500)  # has a quiet part, but is not silent as a whole
    assert stretch_silence(voiced, samples) is voiced
    with pytest.raises(ValueError):
        stretch(quiet, N // 2 + 1)  # more than half a frame, even of silence
    if abs(samples) > N // 4:
        with pytest.raises(ValueError):
            stretch(voiced, samples)  # more than a quarter of a frame that is heard
