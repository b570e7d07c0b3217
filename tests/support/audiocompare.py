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
