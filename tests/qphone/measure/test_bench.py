"""`qphone bench`: the objects it prints (no assertion on speed)."""

from __future__ import annotations

import pytest

from qphone.measure.bench import bench_crypto, bench_handshake, format_table


def test_crypto_and_handshake_benchmarks_report_their_fields() -> None:
    crypto = bench_crypto(rounds=1, batch=20)
    for key in ("srtp_gcm_us", "aes_frame_us", "otp_frame_us", "aes_vs_srtp", "otp_vs_srtp"):
        assert crypto[key] > 0
    for name in ("srtp", "aes", "otp"):  # each step's cost, where a regression shows first
        steps = crypto[f"{name}_protect_us"] + crypto[f"{name}_unprotect_us"]
        assert 0 < crypto[f"{name}_protect_us"] < steps
    assert "OTP protect" in format_table(crypto)
    ratio = crypto["aes_frame_us"] / crypto["srtp_gcm_us"]
    assert abs(crypto["aes_vs_srtp"] - ratio) < 0.01
    hs = bench_handshake(runs=3)
    assert 0 < hs["handshake_ms_p50"] <= hs["handshake_ms_p95"]


def test_table_marks_missed_targets() -> None:
    result = {
        "aes_frame_us": 3.0,
        "srtp_gcm_us": 2.0,
        "aes_vs_srtp": 1.5,
        "otp_frame_us": 2.8,
        "otp_vs_srtp": 1.15,
        "key_ratio_otp": 1.0,
    }
    lines = format_table(result).splitlines()
    assert lines[0].split()[0] == "benchmark"
    aes = next(line for line in lines if line.startswith("AES"))
    otp = next(line for line in lines if line.startswith("OTP"))
    assert aes.rstrip().endswith("MISSED") and otp.rstrip().endswith("ok")
    assert any("key_ratio_otp = 1.0" in line and line.rstrip().endswith("ok") for line in lines)
    assert not any(line.startswith("mouth-to-ear") for line in lines)  # not run: not shown


def test_table_checks_floors_and_the_load_figures() -> None:
    result = {
        "load_pesq_wb_aes": 3.9,
        "load_pesq_wb_otp": 3.7,
        "load_pesq_aes_minus_otp": 0.2,
        "load_unsent_otp": 0,
    }
    lines = format_table(result).splitlines()
    aes = next(line for line in lines if "busy loops, AES" in line)
    otp = next(line for line in lines if "busy loops, OTP" in line)
    diff = next(line for line in lines if "|AES - OTP|" in line)
    unsent = next(line for line in lines if "unsent" in line)
    assert aes.rstrip().endswith("ok") and ">= 3.8" in aes  # a floor: at least
    assert otp.rstrip().endswith("MISSED") and diff.rstrip().endswith("MISSED")
    assert unsent.rstrip().endswith("ok")


def test_unknown_benchmark_is_refused_by_name() -> None:
    from qphone.measure.bench import BENCHMARKS, run_benchmarks

    with pytest.raises(ValueError, match="crypto"):
        run_benchmarks(["nonsense"])
    assert {"crypto", "latency", "speech", "load"} <= set(BENCHMARKS)
