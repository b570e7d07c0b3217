"""qphone.audio.opus against the real libopus (Debian libopus0 through opuslib)."""

from __future__ import annotations

import numpy as np
import pytest

from qphone.audio.opus import (
    OpusCodecError,
    OpusConfig,
    OpusConfigError,
    OpusDecoder,
    OpusEncoder,
    is_dtx_packet,
)
from qphone.audio.wav import frames_to_pcm, iter_frames, read_wav
from qphone.measure.quality import estimate_delay, normalized_correlation
from tests.support.paths import SAMPLES


def speech(rate: int) -> np.ndarray:
    pcm, _ = read_wav(SAMPLES / "speech_a_48k.wav", rate)
    return pcm


def encode_all(cfg: OpusConfig, pcm: np.ndarray) -> list[bytes]:
    enc = OpusEncoder(cfg)
    return [enc.encode(f) for f in iter_frames(pcm, cfg.samples_per_frame)]


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.asarray(x, dtype=np.float64) ** 2)))


@pytest.mark.parametrize(
    ("rate", "frame_ms", "bitrate", "bandwidth"),
    [
        (48000, 20, 24000, "wb"),
        (48000, 10, 32000, "fb"),
        (48000, 60, 16000, "wb"),
        (16000, 40, 20000, "wb"),
        (8000, 20, 12000, "nb"),
    ],
)
def test_round_trip_keeps_energy_and_waveform(
    rate: int, frame_ms: int, bitrate: int, bandwidth: str
) -> None:
    cfg = OpusConfig(sample_rate=rate, frame_ms=frame_ms, bitrate=bitrate, bandwidth=bandwidth)  # type: ignore[arg-type]
    x = speech(rate)
    packets = encode_all(cfg, x)
    assert len(packets) == -(-len(x) // cfg.samples_per_frame)
    mean_bytes = np.mean([len(p) for p in packets])
    # average bitrate within 40 % of the target (VBR, silence included)
    assert 0.4 * bitrate < mean_bytes * 8 * 1000 / frame_ms < 1.4 * bitrate
    dec = OpusDecoder(cfg)
    out = frames_to_pcm(dec.decode(p) for p in packets)
    assert len(out) == len(packets) * cfg.samples_per_frame
    a = estimate_delay(x, out, rate, max_delay_s=0.05)
    # the encoder's lookahead is 6.5 ms at every rate (2.5 ms + 4 ms SILK/CELT delay)
    assert 0 <= a.delay_ms <= 8
    assert a.correlation > 0.85
    ref_rms, out_rms = rms(x), rms(out)
    assert 0.7 * ref_rms < out_rms < 1.3 * ref_rms


def test_plc_gives_a_frame_of_the_right_length_and_fades() -> None:
    cfg = OpusConfig()
    x = speech(48000)
    packets = encode_all(cfg, x)
    dec = OpusDecoder(cfg)
    for p in packets[: _voiced_frames(cfg, 2)[1]]:  # stop inside voiced speech
        dec.decode(p)
    concealed = [dec.conceal() for _ in range(30)]
    assert all(len(c) == cfg.frame_bytes for c in concealed)
    energies = [rms(np.frombuffer(c, dtype=np.int16)) for c in concealed]
    assert energies[0] > 500  # PLC continues the voiced signal...
    assert max(energies[-10:]) < 0.05 * energies[0]  # ...and fades out
    assert len(dec.conceal(480)) == 960  # explicit length: 10 ms at 48 kHz, 2 bytes each


def _fec_vs_plc(cfg: OpusConfig, lost: list[int]) -> tuple[float, float, int]:
    """Mean correlation with the lossless decode of FEC-recovered vs. concealed frames."""
    x = speech(cfg.sample_rate)
    packets = encode_all(cfg, x)
    clean = OpusDecoder(cfg)
    ref = [clean.decode(p) for p in packets]
    fec_dec, plc_dec = OpusDecoder(cfg), OpusDecoder(cfg)
    fec_corr, plc_corr, differ = [], [], 0
    for i, p in enumerate(packets):
        if i in lost:
            f = fec_dec.decode_fec(packets[i + 1])
            c = plc_dec.conceal()
            assert len(f) == len(c) == cfg.frame_bytes
            differ += f != c
            r = np.frombuffer(ref[i], dtype=np.int16)
            fec_corr.append(normalized_correlation(r, np.frombuffer(f, dtype=np.int16)))
            plc_corr.append(normalized_correlation(r, np.frombuffer(c, dtype=np.int16)))
        else:
            fec_dec.decode(p)
            plc_dec.decode(p)
    return float(np.mean(fec_corr)), float(np.mean(plc_corr)), differ


def _voiced_frames(cfg: OpusConfig, count: int) -> list[int]:
    x = speech(cfg.sample_rate)
    frames = list(iter_frames(x, cfg.samples_per_frame))
    loud = [i for i, f in enumerate(frames) if rms(np.frombuffer(f, dtype=np.int16)) > 2000]
    return loud[5 : 5 + 7 * count : 7]  # spread out, never two in a row


def test_fec_recovers_lost_frame_better_than_plc() -> None:
    cfg = OpusConfig(bitrate=24000, fec=True, expected_loss_percent=10)
    lost = _voiced_frames(cfg, 12)
    assert len(lost) == 12
    fec_corr, plc_corr, differ = _fec_vs_plc(cfg, lost)
    assert differ == len(lost)
    assert fec_corr > 0.6
    assert fec_corr > plc_corr + 0.2


def test_without_fec_decode_fec_is_concealment() -> None:
    cfg = OpusConfig(fec=False)
    lost = _voiced_frames(cfg, 6)
    x = speech(48000)
    packets = encode_all(cfg, x)
    assert not any(OpusDecoder.packet_has_fec(p) for p in packets)
    fec_corr, plc_corr, differ = _fec_vs_plc(cfg, lost)
    assert differ == 0  # no LBRR in the packets: libopus falls back to PLC
    assert fec_corr == pytest.approx(plc_corr)


def test_fec_flag_present_in_packets_when_enabled() -> None:
    cfg = OpusConfig(fec=True, expected_loss_percent=10)
    packets = encode_all(cfg, speech(48000))
    share = sum(OpusDecoder.packet_has_fec(p) for p in packets) / len(packets)
    assert share > 0.5


def test_dtx_emits_tiny_packets_in_silence() -> None:
    silence = np.zeros(48000, dtype=np.int16)
    with_dtx = encode_all(OpusConfig(dtx=True), silence)
    without = encode_all(OpusConfig(dtx=False), silence)
    assert sum(map(is_dtx_packet, with_dtx)) > len(with_dtx) // 2
    assert not any(map(is_dtx_packet, without))
    dec = OpusDecoder(OpusConfig())
    # a DTX gap is played with concealment (comfort noise), which stays near silence
    for p in with_dtx[:12]:
        if not is_dtx_packet(p):
            dec.decode(p)
    assert rms(np.frombuffer(dec.conceal(), dtype=np.int16)) < 50


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sample_rate": 44100},
        {"channels": 3},
        {"frame_ms": 25},
        {"frame_ms": 5},
        {"bitrate": 5999},
        {"bitrate": 64001},
        {"bitrate": True},
        {"bandwidth": "uwb"},
        {"bandwidth": "wb", "sample_rate": 8000},
        {"bandwidth": "swb", "sample_rate": 16000},
        {"bandwidth": "fb", "sample_rate": 24000},
        {"expected_loss_percent": -1},
        {"expected_loss_percent": 101},
        {"application": "music"},
        {"fec": 1},
        {"complexity": 11},
    ],
)
def test_config_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(OpusConfigError):
        OpusConfig(**kwargs)  # type: ignore[arg-type]


def test_config_accepts_the_documented_ranges() -> None:
    for fm in (10, 20, 40, 60):
        for br in (6000, 64000):
            for bw in ("nb", "mb", "wb", "swb", "fb"):
                cfg = OpusConfig(frame_ms=fm, bitrate=br, bandwidth=bw)
                assert cfg.samples_per_frame == 48 * fm
                assert cfg.rtp_timestamp_step == 48 * fm
                OpusEncoder(cfg)


def test_bad_input_is_rejected_clearly() -> None:
    cfg = OpusConfig()
    enc, dec = OpusEncoder(cfg), OpusDecoder(cfg)
    with pytest.raises(OpusCodecError, match="exactly one frame"):
        enc.encode(b"\0" * (cfg.frame_bytes - 2))
    with pytest.raises(OpusCodecError, match="conceal"):
        dec.decode(b"")
    with pytest.raises(OpusCodecError):
        dec.decode(bytes([0xFF, 0xFF, 0xFF]))  # code-3 packet with an impossible frame count
    with pytest.raises(OpusCodecError):
        dec.conceal(7)
    # the decoder still works after the rejections
    pkt = enc.encode(b"\0" * cfg.frame_bytes)
    assert len(dec.decode(pkt)) == cfg.frame_bytes
