"""`qphone demo` (what `make demo` runs): real calls in both modes with the embedded keyserver."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support.paths import BIN

pytestmark = pytest.mark.slow


def test_demo_places_real_calls_in_both_modes(tmp_path: Path) -> None:
    out = subprocess.run(
        [str(BIN / "qphone"), "demo", "--seconds", "2", "--dir", str(tmp_path), "--json"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout)  # with --json stdout holds the JSON object alone
    for mode in ("aes", "otp"):
        a, b = summary[mode]["alice"], summary[mode]["bob"]
        assert a["sas"] == b["sas"] and a["mode"] == mode
        assert a["frames_received"] > 50 and b["frames_received"] > 50
        assert a["qkd_bits_consumed"] > 0 and not a["pqc_only"]
        assert Path(summary[mode]["bob_heard"]).stat().st_size > 100_000
        for side in (a, b):  # every bit drawn was used or wasted, and the figures add up
            assert side["qkd_bits_drawn"] == side["qkd_bits_used"] + side["qkd_bits_wasted"]
            erased, dropped = side["qkd_bits"]["erased_unused"], side["qkd_bits"]["dropped"]
            assert side["qkd_bits_wasted"] == erased + dropped >= 0
        total = summary[mode]["total"]
        assert total["qkd_bits_drawn"] == a["qkd_bits_drawn"] >= b["qkd_bits_drawn"]
        hs_epoch = a["qkd_bits"]["handshake"] + a["qkd_bits"]["epoch"]
        own = a["qkd_bits"]["pad"] + a["qkd_bits"]["mac"] + b["qkd_bits"]["pad"]
        assert total["qkd_bits_used"] == hs_epoch + own + b["qkd_bits"]["mac"]
        if mode == "aes":  # AES draws exactly what it mixes in
            assert a["qkd_bits"]["erased_unused"] == 0
            assert total["qkd_bits_drawn"] == hs_epoch + a["qkd_bits"]["dropped"]
    # the progress and the human summary went to stderr
    assert "MATCH" in out.stderr and "ended by alice" in out.stderr
    assert "call : QKD bits drawn" in out.stderr


def test_core_demo_runs_in_memory() -> None:
    out = subprocess.run(
        [str(BIN / "qphone"), "demo", "--core", "--seconds", "2", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert "SAS" in out.stderr
    assert summary["aes"]["epochs"] and summary["otp"]["frames_decrypted"] > 0
