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
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    for mode in ("aes", "otp"):
        a, b = summary[mode]["alice"], summary[mode]["bob"]
        assert a["sas"] == b["sas"] and a["mode"] == mode
        assert a["frames_received"] > 50 and b["frames_received"] > 50
        assert a["qkd_bits_consumed"] > 0 and not a["pqc_only"]
        assert Path(summary[mode]["bob_heard"]).stat().st_size > 100_000
    assert "MATCH" in out.stdout


def test_core_demo_runs_in_memory() -> None:
    out = subprocess.run(
        [str(BIN / "qphone"), "demo", "--core", "--seconds", "2", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["aes"]["epochs"] and summary["otp"]["frames_decrypted"] > 0
