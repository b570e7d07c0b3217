"""``qphone bench``: benchmarks, each against a baseline measured in the same run.

Times are medians over several rounds of batches; the ratios are what to compare across
machines, never the absolute microseconds (this runs on shared, noisy 2-core machines).
"""

from __future__ import annotations

import os
import statistics
import struct
import time
import uuid
from collections.abc import Callable
from typing import Any

from qphone.core.callparams import CallParams, Mode
from qphone.core.handshake import Initiator, NeedQkdKeys, Responder, SendMessage
from qphone.core.identity import Identity
from qphone.core.qkd import QkdKey
from qphone.demo.inmemorycall import InMemoryCall, MemoryKmePair, handshake

PAYLOAD_BYTES = 80


Batch = Callable[[int], float]  # run n protect+unprotect pairs, return the seconds it took


def _srtp_batch() -> Batch:
    import pylibsrtp

    key = os.urandom(44)  # AES-256 key + 12-byte salt
    profile = pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM
    tx = pylibsrtp.Session(pylibsrtp.Policy(key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND, profile))
    rx = pylibsrtp.Session(pylibsrtp.Policy(key, pylibsrtp.Policy.SSRC_ANY_INBOUND, profile))
    payload = os.urandom(PAYLOAD_BYTES)
    state = {"seq": 0}

    def run(n: int) -> float:
        seq0 = state["seq"]
        packets = [
            struct.pack("!BBHII", 0x80, 111, (seq0 + i) & 0xFFFF, (seq0 + i) * 960, 0x1234)
            + payload
            for i in range(n)
        ]  # RTP packets are built by the RTP stack, not SRTP: prepared outside the timing
        state["seq"] = seq0 + n
        protect, unprotect = tx.protect, rx.unprotect
        t0 = time.perf_counter()
        for p in packets:
            unprotect(protect(p))
        return time.perf_counter() - t0

    return run


def _frame_batch(mode: Mode) -> Batch:
    kme = MemoryKmePair()
    params = CallParams(
        mode=mode, rotate_frames=10**6, rotate_ms=86_400_000, pad_block_bits=1 << 20, lookahead=4
    )
    ini, res = handshake(Identity.generate(), Identity.generate(), params, kme)
    call = InMemoryCall(ini, res, kme)
    call.pump()
    a, b = call.initiator, call.responder
    payload = os.urandom(PAYLOAD_BYTES)

    def run(n: int) -> float:
        call.pump()  # keep pad flowing (outside the timed loop)
        protect, unprotect = a.protect, b.unprotect
        now = 1.0
        t0 = time.perf_counter()
        for _ in range(n):
            unprotect(protect(payload, now), now)
        return time.perf_counter() - t0

    return run


def bench_crypto(rounds: int = 15, batch: int = 2000) -> dict[str, Any]:
    """Per-frame protect+unprotect: ours (AES, OTP) against libsrtp AEAD_AES_256_GCM."""
    srtp = _srtp_batch()
    aes = _frame_batch(Mode.AES)
    otp = _frame_batch(Mode.OTP)
    srtp_s, aes_s, otp_s = [], [], []
    for _ in range(rounds):  # interleaved, so drift in machine load hits all three alike
        srtp_s.append(srtp(batch) / batch * 1e6)
        aes_s.append(aes(batch) / batch * 1e6)
        otp_s.append(otp(batch) / batch * 1e6)
    s, a, o = statistics.median(srtp_s), statistics.median(aes_s), statistics.median(otp_s)
    return {
        "payload_bytes": PAYLOAD_BYTES,
        "srtp_gcm_us": round(s, 3),
        "aes_frame_us": round(a, 3),
        "otp_frame_us": round(o, 3),
        "aes_vs_srtp": round(a / s, 3),
        "otp_vs_srtp": round(o / s, 3),
        "rounds": rounds,
        "batch": batch,
    }


def bench_handshake(runs: int = 60) -> dict[str, Any]:
    """Both sides of a full hybrid handshake in memory (QKD material given)."""
    a, b = Identity.generate(), Identity.generate()
    binding = os.urandom(32)
    samples = []
    for _ in range(runs):
        key = QkdKey(uuid.uuid4(), os.urandom(32))
        t0 = time.perf_counter()
        ini = Initiator(a, CallParams(), [key], binding)
        res = Responder(b, binding)
        ev = res.receive(ini.start())
        assert isinstance(ev[0], NeedQkdKeys)
        sh = res.provide_qkd_keys([key])[0]
        assert isinstance(sh, SendMessage)
        fin = ini.receive(sh.data)[0]
        assert isinstance(fin, SendMessage)
        res.receive(fin.data)
        samples.append((time.perf_counter() - t0) * 1e3)
    # baseline in the same run: one ML-DSA-65 signature (the handshake makes two)
    sign = []
    for _ in range(runs):
        t0 = time.perf_counter()
        a.sign(b"x" * 32, b"bench")
        sign.append((time.perf_counter() - t0) * 1e3)
    samples.sort()
    p50 = statistics.median(samples)
    return {
        "handshake_ms_p50": round(p50, 3),
        "handshake_ms_p95": round(samples[int(0.95 * (len(samples) - 1))], 3),
        "hybrid_sign_ms_p50": round(statistics.median(sign), 3),
        "handshake_vs_hybrid_sign": round(p50 / statistics.median(sign), 2),
        "runs": runs,
    }


def bench_latency(
    rounds: int = 2, seconds: float = 8.0, cpu_seconds: float = 20.0
) -> dict[str, Any]:
    """Mouth-to-ear latency against aiortc's stock audio path on the same loopback (same
    measurement method for both, rounds alternated), processing time per frame, CPU of one call
    endpoint, and the key accounting ratio of both modes."""
    import asyncio
    import tempfile
    from pathlib import Path

    from qphone.audio.wav import read_wav
    from qphone.demo.calldemo import SAMPLES
    from qphone.demo.keyserverprocess import running_keyserver
    from qphone.measure.aiortcbaseline import bench_latency_baseline
    from qphone.measure.cpu import measure_endpoint_cpu
    from qphone.measure.latency import measure_latency, timelines_from_call_logs
    from qphone.measure.loopback import LoopbackOptions, run_loopback

    sample = SAMPLES / "speech_a_48k.wav"
    pin, _ = read_wav(sample, 48000)
    result: dict[str, Any] = {}
    stock_p: list[dict[str, float]] = []
    ours_p: list[dict[str, float]] = []
    processing_p99: list[float] = []
    with tempfile.TemporaryDirectory(prefix="qphone-bench-") as tmp:
        work = Path(tmp)
        with running_keyserver(work / "kme", []) as kme:

            def loop(mode: Mode, name: str) -> Any:
                opts = LoopbackOptions(
                    sample=sample,
                    out=work / f"{name}.wav",
                    mode=mode,
                    quality=False,
                    progress=False,
                    workdir=work / name,
                    profile_a=kme / "alice.toml",
                    profile_b=kme / "bob.toml",
                )
                return run_loopback(opts)

            for i in range(rounds):
                stock = asyncio.run(bench_latency_baseline(sample, seconds))
                stock_p.append(stock)
                run = loop(Mode.AES, f"aes{i}")
                pout, _ = read_wav(work / f"aes{i}.wav", 48000)
                tl = timelines_from_call_logs(
                    48000, pin, 960, run.caller.log.send_log, pout, run.answerer.log.playout_log
                )
                ours_p.append(measure_latency(tl).summary())
                processing_p99.append(run.report["latency_ms"]["parts"]["processing"]["p99"])
                result["key_ratio_aes"] = run.report["key"]["used_ratio"]
                result["key_drawn_ratio_aes"] = run.report["key"]["ratio"]
            otp = loop(Mode.OTP, "otp").report["key"]
            result["key_ratio_otp"] = otp["used_ratio"]
            result["key_drawn_ratio_otp"] = otp["ratio"]
            if cpu_seconds > 0:
                cpu = measure_endpoint_cpu(sample, cpu_seconds, kme_dir=kme).summary()
                result["endpoint_cpu_fraction"] = cpu["endpoint_cpu_fraction"]
    for q in ("p50", "p95", "p99"):
        result[f"stock_m2e_ms_{q}"] = round(
            statistics.median(s[f"stock_m2e_ms_{q}"] for s in stock_p), 2
        )
        result[f"m2e_ms_{q}"] = round(statistics.median(o[q] for o in ours_p), 2)
    result["m2e_vs_stock"] = round(result["m2e_ms_p50"] / result["stock_m2e_ms_p50"], 3)
    intervals = [s["stock_capture_interval_ms_p50"] for s in stock_p]
    result["stock_capture_interval_ms_p50"] = round(statistics.median(intervals), 3)
    result["processing_ms_p99"] = round(max(processing_p99), 3)
    result["latency_rounds"] = rounds
    return result


# (what, our figure, baseline figure, ratio or value checked, target, lower is better)
_TABLE = (
    ("AES frame protect+unprotect (us)", "aes_frame_us", "srtp_gcm_us", "aes_vs_srtp", 1.0),
    ("OTP frame protect+unprotect (us)", "otp_frame_us", "srtp_gcm_us", "otp_vs_srtp", 1.5),
    (
        "hybrid handshake p50 (ms)",
        "handshake_ms_p50",
        "hybrid_sign_ms_p50",
        "handshake_ms_p50",
        5.0,
    ),
    ("mouth-to-ear p50 (ms)", "m2e_ms_p50", "stock_m2e_ms_p50", "m2e_vs_stock", 0.6),
    ("processing per frame p99 (ms)", "processing_ms_p99", None, "processing_ms_p99", 2.0),
    ("CPU of one endpoint (core)", "endpoint_cpu_fraction", None, "endpoint_cpu_fraction", 0.05),
)


def format_table(result: dict[str, Any]) -> str:
    """One table of every benchmark that ran: ours, the same-run baseline, the checked figure."""
    rows = [("benchmark", "ours", "baseline", "checked", "target", "")]
    for what, ours, base, checked, target in _TABLE:
        if ours not in result:
            continue
        value = result[checked]
        rows.append(
            (
                what,
                str(result[ours]),
                str(result.get(base, "-")) if base else "-",
                f"{checked} = {value}",
                f"<= {target}",
                "ok" if value <= target else "MISSED",
            )
        )
    for mode in ("aes", "otp"):
        key = f"key_ratio_{mode}"
        if key in result:
            ok = "ok" if result[key] == 1.0 else "MISSED"
            rows.append(
                (
                    f"QKD bits used/needed ({mode})",
                    "-",
                    "-",
                    f"{key} = {result[key]}",
                    "= 1.000",
                    ok,
                )
            )
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)
