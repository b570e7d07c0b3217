"""Opus encoder -> impaired network -> jitter buffer -> Opus decoder, on a speech sample."""

from __future__ import annotations

import random

import numpy as np
import pytest

from qphone.audio.opus import OpusConfig, OpusDecoder, OpusEncoder, decode_playout
from qphone.audio.wav import frames_to_pcm, iter_frames, read_wav, resample, to_int16
from qphone.core.jitterbuffer import JitterBuffer, PlayoutKind
from qphone.measure.quality import measure
from tests.support.paths import SAMPLES

FRAME_S = 0.02


def pipeline(
    loss: float, jitter_s: float, fec: bool, seed: int = 7
) -> tuple[np.ndarray, JitterBuffer]:
    x, _ = read_wav(SAMPLES / "speech_a_48k.wav")
    cfg = OpusConfig(bitrate=24000, fec=fec, expected_loss_percent=5 if fec else 0)
    enc, dec = OpusEncoder(cfg), OpusDecoder(cfg)
    rng = random.Random(seed)
    events: list[tuple[float, int, int, bytes]] = []
    for i, frame in enumerate(iter_frames(x, cfg.samples_per_frame)):
        packet = enc.encode(frame)
        if rng.random() < loss:
            continue
        arrival = i * FRAME_S + 0.01 + rng.random() * jitter_s
        events.append((arrival, i % 65536, (i * cfg.rtp_timestamp_step) % (1 << 32), packet))
    events.sort()
    jb = JitterBuffer()
    out: list[bytes] = []
    tick, k = 0.0, 0
    end = len(x) / 48000 + 0.5
    while tick < end:
        while k < len(events) and events[k][0] <= tick:
            _, seq, ts, packet = events[k]
            jb.push(seq, ts, packet, events[k][0])
            k += 1
        out.extend(decode_playout(dec, item) for item in jb.pop_all(tick))
        tick += FRAME_S
    return frames_to_pcm(out), jb


def score(out: np.ndarray) -> tuple[float, float]:
    ref, _ = read_wav(SAMPLES / "speech_a_16k.wav")
    deg = to_int16(resample(out, 48000, 16000))
    rep = measure(ref, deg, 16000)
    assert rep.pesq is not None
    return rep.pesq, rep.correlation


def test_clean_network_plays_everything() -> None:
    out, jb = pipeline(loss=0.0, jitter_s=0.0, fec=True)
    st = jb.stats()
    assert st.lost == st.late == st.fec_recovered == 0
    assert st.played == 400
    pesq, corr = score(out)
    assert pesq > 3.3 and corr > 0.9


def test_loss_and_jitter_are_concealed_and_fec_helps() -> None:
    out_fec, jb_fec = pipeline(loss=0.1, jitter_s=0.06, fec=True)
    out_plc, jb_plc = pipeline(loss=0.1, jitter_s=0.06, fec=False)
    st = jb_fec.stats()
    assert st.fec_recovered > 10
    assert st.played + st.lost + st.discarded == jb_fec.next_ext_seq - jb_fec.first_ext_seq
    assert jb_plc.stats().lost == st.lost  # same seeded loss pattern
    pesq_fec, corr_fec = score(out_fec)
    pesq_plc, _ = score(out_plc)
    assert corr_fec > 0.6
    assert pesq_fec > pesq_plc
    assert 40 <= st.target_delay_ms <= 90  # U(0, 60 ms) jitter, 95th percentile + margin


@pytest.mark.parametrize("kind", list(PlayoutKind))
def test_decode_playout_gives_one_frame_for_every_kind(kind: PlayoutKind) -> None:
    from qphone.core.jitterbuffer import PlayoutItem

    cfg = OpusConfig()
    enc, dec = OpusEncoder(cfg), OpusDecoder(cfg)
    packet = enc.encode(b"\1\0" * cfg.samples_per_frame)
    payload = packet if kind in (PlayoutKind.NORMAL, PlayoutKind.FEC) else None
    item = PlayoutItem(kind=kind, timestamp=0, due=0.0, payload=payload)
    assert len(decode_playout(dec, item)) == cfg.frame_bytes
