"""References for checking what a call played out: a plain Opus decode of the same sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qphone.audio.opus import OpusConfig, OpusDecoder, OpusEncoder
from qphone.audio.wav import iter_frames, read_wav


def reference_decode(wav: Path, config: OpusConfig) -> np.ndarray:
    """The same Opus stream encoded and decoded without any network or encryption."""
    pcm, _ = read_wav(wav, config.sample_rate)
    enc, dec = OpusEncoder(config), OpusDecoder(config)
    out = [dec.decode(enc.encode(f)) for f in iter_frames(pcm, config.samples_per_frame)]
    return np.frombuffer(b"".join(out), dtype="<i2").astype(np.float64)


def wav_array(path: Path) -> np.ndarray:
    """A WAV file as float samples at 48 kHz."""
    pcm, _ = read_wav(path, 48000)
    return np.asarray(pcm, dtype=np.float64)


def speech_windows(got: np.ndarray, ref: np.ndarray, window_s: float = 0.5) -> list[float]:
    """Correlation with ``ref`` of every window of ``got`` that holds sound, each window aligned
    on its own: a playout whose delay moves (the jitter buffer follows the path's jitter at the
    pauses between words; a device underrun on a busy machine) shifts what follows, which a
    single alignment of the whole recording would count against the call."""
    from qphone.measure.quality import estimate_delay

    win, scores = int(48000 * window_s), []
    for start in range(0, len(got) - win, win):
        chunk = got[start : start + win]
        if np.sqrt(np.mean(chunk**2)) < 300:
            continue
        lo = max(0, start - 3 * 48000)
        scores.append(estimate_delay(ref[lo : start + 3 * 48000], chunk, 48000, 6.0).correlation)
    return scores
