"""`qphone loopback` end to end: a short sample through full calls, both modes, 0 and 10 % loss."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from qphone.audio.wav import read_wav, write_wav
from qphone.core.callparams import Mode
from qphone.measure.loopback import LoopbackOptions, run_loopback
from tests.support.audiocompare import speech_windows
from tests.support.keyserverdemo import private_profile
from tests.support.paths import BIN, SAMPLES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def short_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pcm, rate = read_wav(SAMPLES / "speech_a_48k.wav")
    path = tmp_path_factory.mktemp("sample") / "short.wav"
    write_wav(path, pcm[: 3 * rate], rate)
    return path


def _run(keyserver_pair: Path, sample: Path, tmp: Path, **kw: object) -> dict:
    opts = LoopbackOptions(
        sample=sample,
        out=tmp / "out.wav",
        report=tmp / "report.json",
        profile_a=private_profile(keyserver_pair, "alice", tmp),
        profile_b=private_profile(keyserver_pair, "bob", tmp),
        rotate_frames=50,
        progress=False,
        workdir=tmp,
        **kw,  # type: ignore[arg-type]
    )
    report = run_loopback(opts).report
    assert json.loads((tmp / "report.json").read_text()) == json.loads(json.dumps(report))
    return report


@pytest.mark.parametrize(
    ("mode", "loss", "bitrate"),
    [
        (Mode.AES, 0.0, 24000),
        (Mode.AES, 0.1, 24000),
        (Mode.OTP, 0.0, 24000),
        (Mode.OTP, 0.1, 24000),
        (Mode.OTP, 0.0, 6000),  # pad blocks smaller than the first-pad wait's 1 KiB
    ],
)
def test_report_consistent(
    keyserver_pair: Path, short_sample: Path, tmp_path: Path, mode: Mode, loss: float, bitrate: int
) -> None:
    r = _run(
        keyserver_pair,
        short_sample,
        tmp_path,
        mode=mode,
        loss=loss,
        bitrate=bitrate,
        seed=11,
        quality=False,
    )
    f = r["frames"]
    for said in r["media_priority"].values():  # real-time where permitted (root here), or why not
        assert said == "real-time (SCHED_RR 10)" if os.geteuid() == 0 else said
    assert f["sent"] == f["received"] + f["lost"]
    # 3 s of sample + 1 s tail at 50 frames/s; OTP drops a frame rather than reuse pad when a
    # loaded KME falls behind (a gap the receiver conceals, bounded below)
    assert f["sent"] + f["unsent_no_key"] >= 180
    assert f["unsent_no_key"] == 0 or mode is Mode.OTP
    if loss == 0.0:
        # only scheduling hiccups: the adaptive jitter buffer holds the 97th percentile of the
        # jitter it measures and conceals a frame later than that rather than delaying every
        # frame, so on a busy machine a few per cent of a short call (its busy start included)
        assert f["lost"] == 0 and f["concealed"] <= 0.12 * f["sent"]
    else:
        assert 0.04 * f["sent"] < f["lost"] < 0.2 * f["sent"]
        assert f["concealed"] + f["fec_recovered"] >= f["lost"] - 2
    lat = r["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    parts = lat["parts"]
    assert parts["processing"]["p50"] < lat["p50"] and parts["jitter_buffer"]["p50"] > 0
    key = r["key"]
    total, need = key["total"], key["qkd_bits_needed"]
    # every bit used is accounted for by the theory, every bit drawn was used or wasted
    assert key["used_ratio"] == 1.0 and total["qkd_bits_used"] == need
    assert total["qkd_bits_drawn"] == total["qkd_bits_used"] + total["qkd_bits_wasted"]
    assert key["ratio"] == round(total["qkd_bits_drawn"] / need, 6) >= 1.0
    for who in ("alice", "bob"):
        side = key[who]
        assert side["qkd_bits_drawn"] == side["qkd_bits_used"] + side["qkd_bits_wasted"]
        assert side["qkd_bits_wasted"] >= side["erased_unused"] >= 0
    assert total["qkd_bits_drawn"] == key["alice"]["qkd_bits_drawn"]
    by_purpose = key["qkd_bits_used_by_purpose"]
    if mode is Mode.AES:
        assert by_purpose["epoch"] >= 3 * 256  # rotated every 50 frames
        assert key["alice"]["erased_unused"] == 0  # AES draws exactly what it mixes in
    else:
        assert by_purpose["pad"] > 0 and by_purpose["mac"] > 0
    # the loss marks of the plot are the slots the counters count
    events = r["series"]["loss_events"]
    assert sum(k == "plc" for _, k in events) == f["concealed"]
    assert sum(k == "fec" for _, k in events) == f["fec_recovered"]
    assert r["quality"]["bit_identical_to_unencrypted"] is True
    assert r["link"]["qber"] is not None and not r["link"]["eavesdropper_alarm"]
    got, _ = read_wav(tmp_path / "out.wav", 48000)
    ref, _ = read_wav(short_sample, 48000)
    got_f = np.asarray(got, dtype=float)
    assert np.sqrt(np.mean(got_f**2)) > 300
    if loss == 0.0 and bitrate == 24000:  # at 6 kbit/s the codec itself changes the waveform
        # window by window: a frame concealed on a busy machine moves the playout of what
        # follows (a single alignment of the whole output gave 0.67 in one CI run)
        scores = speech_windows(got_f, np.asarray(ref, dtype=float))
        assert len(scores) >= 4 and np.median(scores) > 0.8 and sorted(scores)[1] > 0.5, scores


def test_seeded_loss_pattern_reproducible(
    keyserver_pair: Path, short_sample: Path, tmp_path: Path
) -> None:
    runs = []
    for i, seed in enumerate((5, 5, 6)):
        d = tmp_path / str(i)
        d.mkdir()
        runs.append(_run(keyserver_pair, short_sample, d, loss=0.1, seed=seed, quality=False))
    assert runs[0]["loss_pattern"] == runs[1]["loss_pattern"] != runs[2]["loss_pattern"]
    assert len(runs[0]["loss_pattern"]) == runs[0]["frames"]["lost"]


def test_cli_with_plot_and_quality(
    keyserver_pair: Path, short_sample: Path, tmp_path: Path
) -> None:
    """The command itself: report, plot, PESQ/STOI of encrypted and unencrypted pipelines."""
    out = subprocess.run(
        [
            str(BIN / "qphone"),
            "loopback",
            str(short_sample),
            "--out",
            str(tmp_path / "o.wav"),
            "--report",
            str(tmp_path / "r.json"),
            "--plot",
            str(tmp_path / "r.png"),
            "--loss",
            "0.05",
            "--seed",
            "2",
            "--profile-a",
            str(private_profile(keyserver_pair, "alice", tmp_path)),
            "--profile-b",
            str(private_profile(keyserver_pair, "bob", tmp_path)),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "mouth-to-ear p50" in out.stderr  # with --json the summary line goes to stderr
    r = json.loads((tmp_path / "r.json").read_text())
    assert json.loads(out.stdout) == r  # and stdout holds the report alone
    q = r["quality"]
    assert q["encrypted"]["pesq_wb"] == q["unencrypted"]["pesq_wb"] > 1.0
    assert 0.5 < q["encrypted"]["stoi"] <= 1.0
    png = (tmp_path / "r.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    for key in ("latency_ms", "frames", "key", "handshake_ms", "quality", "link", "series"):
        assert key in r
    hs = r["handshake_ms"]
    assert hs["total_ms"] >= hs["signaling_ice_dtls_ms"] > 0


@pytest.mark.parametrize("which", ["--out", "--report", "--plot", "sample"])
def test_cli_checks_its_files_before_it_starts(tmp_path: Path, which: str) -> None:
    """A bad SAMPLE or an output in a missing directory is one line, exit 2, before any KME."""
    paths = {
        "sample": str(SAMPLES / "speech_a_48k.wav"),
        "--out": str(tmp_path / "o.wav"),
        "--report": str(tmp_path / "r.json"),
        "--plot": str(tmp_path / "r.png"),
    }
    if which == "sample":
        (tmp_path / "notes.wav").write_text("not a wav")
        paths["sample"] = str(tmp_path / "notes.wav")
    else:
        paths[which] = str(tmp_path / "missing" / "file")
    out = subprocess.run(
        [str(BIN / "qphone"), "loopback", paths.pop("sample"), *sum(paths.items(), ())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.splitlines()) == 1 and out.stderr.startswith("qphone loopback: ")
    if which == "sample":
        assert "not a WAV file" in out.stderr
    else:
        assert f"{which} {paths[which]}: directory {tmp_path / 'missing'} does not exist" in (
            out.stderr
        )
    assert not list(tmp_path.glob("*.json"))  # nothing was written
