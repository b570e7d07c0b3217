"""Recorded human speech (Debian's asterisk-core-sounds-en-wav, installed by `make setup`):
found, built into one sample, and scored with narrow-band PESQ after the call's codec."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qphone.audio.opus import OpusConfig, OpusDecoder, OpusEncoder
from qphone.audio.wav import read_wav, resample, wav_info
from qphone.measure.naturalspeech import (
    PACKAGE,
    NaturalSpeechUnavailable,
    natural_speech_sample,
    prompts_installed,
)
from qphone.measure.quality import measure

needs_prompts = pytest.mark.skipif(
    not prompts_installed(), reason=f"Debian package {PACKAGE} not installed (make setup)"
)


@needs_prompts
def test_natural_sample_is_8_khz_speech_that_scores_narrow_band_pesq(tmp_path: Path) -> None:
    path = natural_speech_sample(tmp_path)
    info = wav_info(path)
    assert info.sample_rate == 8000 and info.channels == 1
    assert 7.0 < info.frames / 8000 < 10.0  # about as long as the synthetic samples
    ref, _ = read_wav(path, 8000)
    pcm, _ = read_wav(path, 48000)
    cfg = OpusConfig()  # the call's codec: 24 kbit/s wide-band, 20 ms
    enc, dec = OpusEncoder(cfg), OpusDecoder(cfg)
    step = cfg.samples_per_frame
    x = np.asarray(pcm, dtype=np.int16)
    x = np.concatenate((x, np.zeros(-len(x) % step, dtype=np.int16)))
    out = b"".join(
        dec.decode(enc.encode(x[i : i + step].tobytes())) for i in range(0, len(x), step)
    )
    deg = resample(np.frombuffer(out, dtype="<i2"), 48000, 8000)
    q = measure(ref, deg, 8000)
    assert q.pesq_mode == "nb"
    assert q.pesq is not None and 3.0 < q.pesq <= 4.55  # P.862 narrow-band MOS-LQO range


def test_missing_prompts_say_how_to_install_them(tmp_path: Path) -> None:
    with pytest.raises(NaturalSpeechUnavailable, match=PACKAGE):
        natural_speech_sample(tmp_path / "out", sounds=tmp_path / "nowhere")
    assert not (tmp_path / "out").exists()  # nothing written


@needs_prompts
def test_module_writes_the_sample_for_qphone_loopback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from qphone.measure.naturalspeech import main

    assert main([str(tmp_path)]) == 0
    assert Path(capsys.readouterr().out.strip()) == tmp_path / "natural_en_8k.wav"
    assert main([]) == 2
