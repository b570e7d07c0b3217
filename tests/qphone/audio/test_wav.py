"""qphone.audio.wav: reading any PCM WAV as mono int16 at a chosen rate, framing, writing."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from qphone.audio.wav import (
    WavFormatError,
    frames_to_pcm,
    iter_frames,
    read_wav,
    resample,
    wav_info,
    write_wav,
)
from qphone.measure.quality import estimate_delay
from tests.support.paths import SAMPLES


@pytest.mark.parametrize("name", ["speech_a", "speech_b"])
@pytest.mark.parametrize("rate", [16000, 48000])
def test_samples_are_as_documented(name: str, rate: int) -> None:
    info = wav_info(SAMPLES / f"{name}_{rate // 1000}k.wav")
    assert (info.sample_rate, info.channels, info.sample_width) == (rate, 1, 2)
    assert 8.0 <= info.duration <= 12.0
    pcm, r = read_wav(SAMPLES / f"{name}_{rate // 1000}k.wav")
    assert r == rate and pcm.dtype == np.int16
    assert 1000 < np.sqrt(np.mean(pcm.astype(float) ** 2)) < 10000  # speech, not silence


def test_two_voices_differ() -> None:
    a, _ = read_wav(SAMPLES / "speech_a_16k.wav")
    b, _ = read_wav(SAMPLES / "speech_b_16k.wav")
    assert estimate_delay(a, b, 16000).correlation < 0.3


def test_16k_and_48k_files_hold_the_same_speech() -> None:
    lo, _ = read_wav(SAMPLES / "speech_a_16k.wav")
    hi, _ = read_wav(SAMPLES / "speech_a_48k.wav", 16000)
    a = estimate_delay(lo, hi, 16000, max_delay_s=0.01)
    assert a.delay == 0 and a.correlation > 0.98


def test_stereo_24bit_44k1_is_mixed_down_and_resampled(tmp_path: Path) -> None:
    t = np.arange(44100) / 44100
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    right = 0.5 * np.sin(2 * np.pi * 440 * t)
    frames = np.stack([left, right], axis=1).reshape(-1)
    v = np.round(frames * (1 << 23)).astype(np.int32)
    raw = np.stack([v & 0xFF, (v >> 8) & 0xFF, (v >> 16) & 0xFF], axis=1).astype(np.uint8)
    path = tmp_path / "s24.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(3)
        w.setframerate(44100)
        w.writeframes(raw.tobytes())
    pcm, rate = read_wav(path, 16000)
    assert rate == 16000 and len(pcm) == 16000
    expect = 0.5 * 32768 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    assert np.max(np.abs(pcm[100:-100] - expect[100:-100])) < 200


@settings(max_examples=50, deadline=None)
@given(arrays(np.int16, st.integers(0, 2000)), st.sampled_from([8000, 16000, 48000]))
def test_write_read_round_trip(pcm: np.ndarray, rate: int) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.wav"
        write_wav(path, pcm, rate)
        back, r = read_wav(path)
    assert r == rate
    assert np.array_equal(back, pcm)


@given(arrays(np.int16, st.integers(0, 3000)), st.integers(1, 1000))
def test_frames_cover_the_signal(pcm: np.ndarray, n: int) -> None:
    frames = list(iter_frames(pcm, n))
    assert all(len(f) == 2 * n for f in frames)
    joined = frames_to_pcm(frames)
    assert np.array_equal(joined[: len(pcm)], pcm)
    assert not joined[len(pcm) :].any()
    assert len(list(iter_frames(pcm, n, pad=False))) == len(pcm) // n


def test_resample_keeps_a_tone() -> None:
    x = np.sin(2 * np.pi * 1000 * np.arange(48000) / 48000)
    y = resample(x, 48000, 8000)
    assert len(y) == 8000
    assert (
        np.max(np.abs(y[50:-50] - np.sin(2 * np.pi * 1000 * np.arange(8000) / 8000)[50:-50])) < 0.01
    )


def test_not_a_wav(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\0\0\0\0WAVEjunk")
    with pytest.raises(WavFormatError):
        read_wav(bad)
    with pytest.raises(WavFormatError):
        wav_info(bad)
    with pytest.raises(ValueError):
        list(iter_frames(np.zeros(10, dtype=np.int16), 0))
    with pytest.raises(ValueError):
        write_wav(tmp_path / "odd.wav", b"\0\0\0", 8000)


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=200))
def test_any_bytes_read_as_a_wav_file_raise_only_wav_format_error(
    tmp_path_factory: pytest.TempPathFactory, body: bytes
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "x.wav"
    for data in (body, b"RIFF" + body[:4] + b"WAVE" + body[4:]):
        path.write_bytes(data)
        for reader in (read_wav, wav_info):
            try:
                reader(path)
            except WavFormatError as exc:
                assert str(exc).startswith(f"{path}: ") and "WAV" in str(exc)


def test_alaw_and_text_files_are_named_as_such(tmp_path: Path) -> None:
    import struct

    fmt = struct.pack("<HHIIHH", 6, 1, 8000, 8000, 1, 8)
    body = b"WAVEfmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", 4) + bytes(4)
    (tmp_path / "a.wav").write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    with pytest.raises(WavFormatError, match="A-law WAV is not supported: convert it to a 16-bit"):
        read_wav(tmp_path / "a.wav")
    (tmp_path / "t.wav").write_text("just text")
    with pytest.raises(WavFormatError, match="not a WAV file"):
        read_wav(tmp_path / "t.wav")
