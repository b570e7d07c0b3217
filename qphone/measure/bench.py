"""``qphone bench``: benchmarks, each against a baseline measured in the same run.

Times are medians over several rounds of batches (the crypto benchmark: the fastest round, see
bench_crypto); the ratios are what to compare across machines, never the absolute microseconds
(this runs on shared, noisy 2-core machines).
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
from qphone.core.events import ResolveQkdKeys, SendControl
from qphone.core.handshake import Initiator, Responder
from qphone.core.identity import Identity
from qphone.core.qkd import QkdKey
from qphone.demo.inmemorycall import InMemoryCall, MemoryKmePair, handshake

PAYLOAD_BYTES = 80


Batch = Callable[[int], tuple[float, float]]
"""Run n frames through protect, then through unprotect: the seconds each step took."""


def _srtp_batch() -> Batch:
    import pylibsrtp

    key = os.urandom(44)  # AES-256 key + 12-byte salt
    profile = pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM
    tx = pylibsrtp.Session(pylibsrtp.Policy(key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND, profile))
    rx = pylibsrtp.Session(pylibsrtp.Policy(key, pylibsrtp.Policy.SSRC_ANY_INBOUND, profile))
    payload = os.urandom(PAYLOAD_BYTES)
    state = {"seq": 0}

    def run(n: int) -> tuple[float, float]:
        seq0 = state["seq"]
        packets = [
            struct.pack("!BBHII", 0x80, 111, (seq0 + i) & 0xFFFF, (seq0 + i) * 960, 0x1234)
            + payload
            for i in range(n)
        ]  # RTP packets are built by the RTP stack, not SRTP: prepared outside the timing
        state["seq"] = seq0 + n
        protect, unprotect = tx.protect, rx.unprotect
        t0 = time.perf_counter()
        frames = [protect(p) for p in packets]
        t1 = time.perf_counter()
        for f in frames:
            unprotect(f)
        return t1 - t0, time.perf_counter() - t1

    return run


def _frame_batch(mode: Mode) -> Batch:
    kme = MemoryKmePair()
    params = CallParams(
        mode=mode, rotate_frames=10**6, rotate_ms=86_400_000, pad_block_bits=1 << 20, lookahead=4
    )
    ini, res = handshake(Identity.generate(), Identity.generate(), params, kme)
    call = InMemoryCall(ini, res, kme, pad_lookahead_s=0.5)  # the endpoints' lookahead
    call.pump()
    a, b = call.initiator, call.responder
    payload = os.urandom(PAYLOAD_BYTES)
    clock = {"now": 1.0}
    chunk = 1000  # frames between two deliveries of pad (less than one block's worth)

    def run(n: int) -> tuple[float, float]:
        protect, unprotect = a.protect, b.unprotect
        p = u = 0.0
        for first in range(0, n, chunk):
            call.pump()  # keep pad flowing (outside the timed loops)
            now = clock["now"]
            count = min(chunk, n - first)
            times = [now + 0.02 * i for i in range(count)]  # 20 ms frames
            clock["now"] = now + 0.02 * count
            t0 = time.perf_counter()
            frames = [protect(payload, t) for t in times]
            t1 = time.perf_counter()
            for f, t in zip(frames, times, strict=True):
                unprotect(f, t)
            t2 = time.perf_counter()
            p, u = p + t1 - t0, u + t2 - t1
        return p, u

    return run


def bench_crypto(rounds: int = 15, batch: int = 2000) -> dict[str, Any]:
    """Per-frame protect+unprotect: ours (AES, OTP) against libsrtp AEAD_AES_256_GCM, and each
    step's cost on its own (a regression shows in the step it is in)."""
    runs = {"srtp": _srtp_batch(), "aes": _frame_batch(Mode.AES), "otp": _frame_batch(Mode.OTP)}
    steps: dict[str, tuple[list[float], list[float], list[float]]] = {
        name: ([], [], []) for name in runs
    }
    # each round in short batches (a few ms: most escape preemption), interleaved so that drift
    # in machine load hits all three alike; per step the fastest batch counts: preemption on a
    # busy machine only ever adds time, so the minimum is the cost of the code, and the ratio
    # of minima holds steady where medians swing with the load
    short = max(1, min(batch, 200))
    for _ in range(rounds * max(1, batch // short)):
        for name, run in runs.items():
            p, u = run(short)
            prot, unprot, both = steps[name]
            prot.append(p / short * 1e6)
            unprot.append(u / short * 1e6)
            both.append((p + u) / short * 1e6)
    med = {name: tuple(min(x) for x in lists) for name, lists in steps.items()}
    s, a, o = med["srtp"][2], med["aes"][2], med["otp"][2]
    result: dict[str, Any] = {
        "payload_bytes": PAYLOAD_BYTES,
        "srtp_gcm_us": round(s, 3),
        "aes_frame_us": round(a, 3),
        "otp_frame_us": round(o, 3),
        "aes_vs_srtp": round(a / s, 3),
        "otp_vs_srtp": round(o / s, 3),
        "rounds": rounds,
        "batch": batch,
    }
    for name in runs:
        result[f"{name}_protect_us"] = round(med[name][0], 3)
        result[f"{name}_unprotect_us"] = round(med[name][1], 3)
    return result


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
        assert isinstance(ev[0], ResolveQkdKeys)
        sh = res.provide_qkd_keys([key])[0]
        assert isinstance(sh, SendControl)
        fin = ini.receive(sh.data)[0]
        assert isinstance(fin, SendControl)
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
                played = run.answerer.log.played
                tl = timelines_from_call_logs(
                    48000,
                    pin,
                    960,
                    run.caller.log.send_log,
                    pout,
                    run.answerer.log.playout_log,
                    output_lengths=[len(p.pcm) // 2 for p in played],
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


def _loopbacks(
    runs: list[tuple[str, Mode, Any]], busy: int = 0, quiet: tuple[tuple[str, Mode, Any], ...] = ()
) -> dict[str, dict[str, Any]]:
    """Loopback calls (name, mode, sample), each against one keyserver pair started here, with
    ``busy`` busy-loop processes beside them (the ``quiet`` calls first, without them: the
    same run's baseline); each call's report."""
    import tempfile
    from pathlib import Path

    from qphone.demo.keyserverprocess import running_keyserver
    from qphone.measure.busyload import busy_loops
    from qphone.measure.loopback import LoopbackOptions, run_loopback

    reports: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="qphone-bench-") as tmp:
        work = Path(tmp)
        with running_keyserver(work / "kme", []) as kme:
            for name, mode, sample, loops in [(*r, 0) for r in quiet] + [(*r, busy) for r in runs]:
                opts = LoopbackOptions(
                    sample=sample,
                    out=work / f"{name}.wav",
                    mode=mode,
                    progress=False,
                    workdir=work / name,
                    profile_a=kme / "alice.toml",
                    profile_b=kme / "bob.toml",
                )
                with busy_loops(loops):
                    run = run_loopback(opts)
                report = run.report
                report["frames_unsent_no_key"] = run.caller.summary.frames_unsent_no_key
                reports[name] = report
    return reports


def _pesq(report: dict[str, Any], key: str) -> float:
    value = report["quality"].get("encrypted", {}).get(key)
    return float("nan") if value is None else float(value)


def bench_speech() -> dict[str, Any]:
    """Voice quality of an AES and an OTP call on recorded human speech (narrow-band PESQ:
    the recording is 8 kHz) beside the bundled synthetic sample (wide-band PESQ)."""
    import tempfile
    from pathlib import Path

    from qphone.demo.calldemo import SAMPLES
    from qphone.measure.naturalspeech import natural_speech_sample

    with tempfile.TemporaryDirectory(prefix="qphone-speech-") as tmp:
        natural = natural_speech_sample(Path(tmp))
        synthetic = SAMPLES / "speech_a_48k.wav"
        reports = _loopbacks(
            [
                ("natural_aes", Mode.AES, natural),
                ("natural_otp", Mode.OTP, natural),
                ("synthetic_aes", Mode.AES, synthetic),
            ]
        )
    out: dict[str, Any] = {}
    for mode in ("aes", "otp"):
        out[f"pesq_nb_natural_{mode}"] = _pesq(reports[f"natural_{mode}"], "pesq_nb")
    out["pesq_wb_synthetic_aes"] = _pesq(reports["synthetic_aes"], "pesq_wb")
    out["natural_minus_synthetic"] = round(
        out["pesq_nb_natural_aes"] - out["pesq_wb_synthetic_aes"], 3
    )
    return out


LOAD_PROCESSES = 2  # busy loops: both cores of the 2-core machines this runs on


def bench_load(busy: int = LOAD_PROCESSES) -> dict[str, Any]:
    """An AES and an OTP call of the same sample with ``busy`` busy-loop processes beside them
    (started here): both modes' PESQ-WB, their difference, latency, frames concealed and OTP
    frames unsent for want of pad; the baseline: the same AES call without the busy loops,
    just before, and the load average during the run (other work on the machine)."""
    from qphone.demo.calldemo import SAMPLES

    sample = SAMPLES / "speech_a_48k.wav"
    reports = _loopbacks(
        [("aes", Mode.AES, sample), ("otp", Mode.OTP, sample)],
        busy=busy,
        quiet=(("quiet_aes", Mode.AES, sample),),
    )
    out: dict[str, Any] = {"load_busy_processes": busy}
    out["quiet_pesq_wb_aes"] = _pesq(reports["quiet_aes"], "pesq_wb")
    out["quiet_m2e_ms_p99_aes"] = reports["quiet_aes"]["latency_ms"]["p99"]
    for mode in ("aes", "otp"):
        r = reports[mode]
        out[f"load_pesq_wb_{mode}"] = _pesq(r, "pesq_wb")
        out[f"load_m2e_ms_p50_{mode}"] = r["latency_ms"]["p50"]
        out[f"load_m2e_ms_p99_{mode}"] = r["latency_ms"]["p99"]
        out[f"load_concealed_{mode}"] = r["frames"]["concealed"]
    out["load_unsent_otp"] = reports["otp"]["frames_unsent_no_key"]
    out["load_pesq_aes_minus_otp"] = round(
        abs(out["load_pesq_wb_aes"] - out["load_pesq_wb_otp"]), 3
    )
    out["load_average_1min"] = round(os.getloadavg()[0], 1)
    return out


BENCHMARKS = ("crypto", "handshake", "latency", "speech", "load")


def run_benchmarks(names: tuple[str, ...] | list[str], rounds: int = 15) -> dict[str, Any]:
    """The benchmarks named (``all``: every one), merged into one result."""
    result: dict[str, Any] = {}
    for name in BENCHMARKS if "all" in names else names:
        if name == "crypto":
            result.update(bench_crypto(rounds=rounds))
        elif name == "handshake":
            result.update(bench_handshake())
        elif name == "latency":
            result.update(bench_latency(rounds=max(1, rounds // 5)))
        elif name == "speech":
            result.update(bench_speech())
        elif name == "load":
            result.update(bench_load())
        else:
            raise ValueError(f"no benchmark {name!r}: one of {', '.join(BENCHMARKS)} or all")
    return result


# (what, our figure, baseline figure, figure checked, target: at most (a float), at least
# (">= x"), or None (shown only: the cost of one step, where a regression shows first))
_TABLE: tuple[tuple[str, str, str | None, str, float | str | None], ...] = (
    ("AES frame protect+unprotect (us)", "aes_frame_us", "srtp_gcm_us", "aes_vs_srtp", 1.0),
    ("OTP frame protect+unprotect (us)", "otp_frame_us", "srtp_gcm_us", "otp_vs_srtp", 1.2),
    ("  AES protect (us)", "aes_protect_us", "srtp_protect_us", "aes_protect_us", None),
    ("  AES unprotect (us)", "aes_unprotect_us", "srtp_unprotect_us", "aes_unprotect_us", None),
    ("  OTP protect (us)", "otp_protect_us", "srtp_protect_us", "otp_protect_us", None),
    ("  OTP unprotect (us)", "otp_unprotect_us", "srtp_unprotect_us", "otp_unprotect_us", None),
    (
        "hybrid handshake p50 (ms)",
        "handshake_ms_p50",
        "hybrid_sign_ms_p50",
        "handshake_ms_p50",
        5.0,
    ),
    ("mouth-to-ear p50 (ms)", "m2e_ms_p50", "stock_m2e_ms_p50", "m2e_vs_stock", 0.6),
    ("mouth-to-ear p50 (ms)", "m2e_ms_p50", None, "m2e_ms_p50", 40.0),
    ("mouth-to-ear p99 (ms)", "m2e_ms_p99", "stock_m2e_ms_p99", "m2e_ms_p99", 60.0),
    ("processing per frame p99 (ms)", "processing_ms_p99", None, "processing_ms_p99", 2.0),
    (
        "PESQ-NB natural speech, AES",
        "pesq_nb_natural_aes",
        "pesq_wb_synthetic_aes",
        "pesq_nb_natural_aes",
        None,
    ),
    ("PESQ-NB natural speech, OTP", "pesq_nb_natural_otp", None, "pesq_nb_natural_otp", None),
    (
        "PESQ-WB 2 busy loops, AES",
        "load_pesq_wb_aes",
        "quiet_pesq_wb_aes",
        "load_pesq_wb_aes",
        ">= 3.8",
    ),
    ("PESQ-WB 2 busy loops, OTP", "load_pesq_wb_otp", None, "load_pesq_wb_otp", ">= 3.8"),
    (
        "PESQ-WB |AES - OTP| busy",
        "load_pesq_aes_minus_otp",
        None,
        "load_pesq_aes_minus_otp",
        0.05,
    ),
    ("OTP frames unsent (busy)", "load_unsent_otp", None, "load_unsent_otp", 0.0),
    (
        "mouth-to-ear p99 busy, AES (ms)",
        "load_m2e_ms_p99_aes",
        "quiet_m2e_ms_p99_aes",
        "load_m2e_ms_p99_aes",
        None,
    ),
    ("mouth-to-ear p99 busy, OTP (ms)", "load_m2e_ms_p99_otp", None, "load_m2e_ms_p99_otp", None),
    ("CPU of one endpoint (core)", "endpoint_cpu_fraction", None, "endpoint_cpu_fraction", 0.05),
)


def _verdict(value: float, target: float | str | None) -> tuple[str, str]:
    if target is None:
        return "-", ""
    if isinstance(target, str):  # ">= x"
        floor = float(target.removeprefix(">=").strip())
        return target, "ok" if value >= floor else "MISSED"
    return f"<= {target}", "ok" if value <= target else "MISSED"


def format_table(result: dict[str, Any]) -> str:
    """One table of every benchmark that ran: ours, the same-run baseline, the checked figure."""
    rows = [("benchmark", "ours", "baseline", "checked", "target", "")]
    for what, ours, base, checked, target in _TABLE:
        if ours not in result:
            continue
        value = result[checked]
        shown, verdict = _verdict(value, target)
        rows.append(
            (
                what,
                str(result[ours]),
                str(result.get(base, "-")) if base else "-",
                f"{checked} = {value}",
                shown,
                verdict,
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
