"""qphone.measure.quality: alignment, PESQ and STOI on the samples."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from qphone.audio.opus import OpusConfig, OpusDecoder, OpusEncoder
from qphone.audio.wav import frames_to_pcm, iter_frames, read_wav
from qphone.measure import quality
from qphone.measure.quality import (
    MeasurementUnavailable,
    QualityError,
    estimate_delay,
    measure,
    pesq_score,
    stoi_score,
)
from tests.support.paths import SAMPLES


def sample(rate: int = 16000, name: str = "speech_a") -> np.ndarray:
    pcm, _ = read_wav(SAMPLES / f"{name}_16k.wav", rate)
    return pcm


@pytest.mark.parametrize("delay", [-480, 0, 1, 1234, 8000])
def test_estimate_delay_finds_a_known_shift(delay: int) -> None:
    ref = sample().astype(float)
    rng = np.random.default_rng(5)
    deg = np.roll(np.concatenate([ref, np.zeros(9000)]), delay)[: len(ref)]
    deg = 0.5 * deg + rng.normal(0, 100, len(deg))
    a = estimate_delay(ref, deg, 16000)
    assert a.delay == delay
    assert a.delay_ms == pytest.approx(delay / 16)
    assert 0.9 < a.correlation < 1.0


def test_pesq_and_stoi_of_a_sample_against_itself_and_noise() -> None:
    ref = sample()
    p, mode = pesq_score(ref, ref, 16000)
    assert mode == "wb" and p > 4.4
    noise = np.random.default_rng(1).normal(0, 3000, len(ref)).astype(np.int16)
    p_noise, _ = pesq_score(ref, noise, 16000)
    assert p_noise < 1.5
    assert stoi_score(ref, ref, 16000) > 0.99
    assert stoi_score(ref, noise, 16000) < 0.5


def test_narrowband_pesq_at_8k() -> None:
    ref = sample(8000)
    p, mode = pesq_score(ref, ref, 8000)
    assert mode == "nb" and p > 4.0
    with pytest.raises(QualityError, match="16 kHz"):
        pesq_score(ref, ref, 8000, mode="wb")


def test_opus_quality_orders_by_bitrate() -> None:
    """The measurement sees what the codec does: 24 kbit/s beats 8 kbit/s wideband."""
    ref = sample(16000, "speech_b")
    scores = {}
    for bitrate in (8000, 24000):
        cfg = OpusConfig(
            sample_rate=16000, bitrate=bitrate, bandwidth="wb", fec=False, complexity=10
        )
        enc, dec = OpusEncoder(cfg), OpusDecoder(cfg)
        out = frames_to_pcm(dec.decode(enc.encode(f)) for f in iter_frames(ref, 320))
        rep = measure(ref, out, 16000)
        assert rep.delay_ms == pytest.approx(6.5, abs=1.0)  # Opus lookahead
        scores[bitrate] = rep
    assert scores[24000].pesq is not None and scores[8000].pesq is not None
    assert scores[24000].pesq > 3.8
    assert scores[24000].pesq > scores[8000].pesq + 1.0
    assert scores[24000].stoi is not None and scores[24000].stoi > 0.9


def test_silence_is_reported_clearly() -> None:
    silent = np.zeros(16000 * 3, dtype=np.int16)
    with pytest.raises(QualityError):
        pesq_score(silent, silent, 16000)


def test_missing_packages_name_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pesq", None)
    monkeypatch.setitem(sys.modules, "pystoi", None)
    ref = sample()
    with pytest.raises(MeasurementUnavailable, match=r"pip install 'qphone\[measure\]'"):
        pesq_score(ref, ref, 16000)
    with pytest.raises(MeasurementUnavailable, match=r"pip install 'qphone\[measure\]'"):
        stoi_score(ref, ref, 16000)
    assert quality.INSTALL_HINT == "pip install 'qphone[measure]'"
