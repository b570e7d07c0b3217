"""Mouth-to-ear latency of qphone's call pipeline against aiortc's stock audio path, and the CPU
of one call endpoint: the measurement behind docs/bench.md until ``qphone bench latency`` has it.

Both latencies come from the same method (qphone.latencymeasure: capture time of the input
sample a played frame carries to the frame's playout, found by cross-correlation):

* stock: qphone.stockpath (two RTCPeerConnections on 127.0.0.1, aiortc's Opus encoder,
  jitter buffer and decoder thread, DTLS-SRTP only);
* ours: qphone.loopback at 0 % loss (two CallEndpoints, keyserver pair, AES mode, 24 kbit/s
  wideband, our jitter buffer), timelines from the endpoints' logs and OUT.wav.

Rounds alternate stock and ours so that load drift on the machine hits both alike.

    .venv/bin/python bench/latency_baseline.py [--seconds 8] [--rounds 2] [--cpu-seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qphone.cpumeasure import measure_endpoint_cpu
from qphone.latencymeasure import measure_latency, timelines_from_call_logs
from qphone.loopback import LoopbackOptions, run_loopback
from qphone.stockpath import bench_latency_baseline
from qphone.wavio import read_wav

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "speech_a_48k.wav"


def ours(sample: Path, work: Path) -> dict[str, Any]:
    out = work / "ours.wav"
    run = run_loopback(
        LoopbackOptions(sample=sample, out=out, quality=False, progress=False, workdir=work)
    )
    pin, _ = read_wav(sample, 48000)
    pout, _ = read_wav(out, 48000)
    tl = timelines_from_call_logs(
        48000, pin, 960, run.alice.send_log, pout, run.bob.playout.stats.playout_log
    )
    res = measure_latency(tl).summary()
    return {
        "ours_m2e_ms_p50": res["p50"],
        "ours_m2e_ms_p95": res["p95"],
        "ours_m2e_ms_p99": res["p99"],
        "ours_m2e_ms_max": res["max"],
        "windows": res["windows"],
        "loopback_report_m2e_ms_p50": run.report["latency_ms"]["p50"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sample", type=Path, default=SAMPLE)
    ap.add_argument("--seconds", type=float, default=8.0, help="stock path audio per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--cpu-seconds", type=float, default=20.0, help="0: skip the CPU part")
    args = ap.parse_args()
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="qphone-latency-bench-") as d:
        for i in range(args.rounds):
            stock = asyncio.run(bench_latency_baseline(args.sample, args.seconds))
            mine = ours(args.sample, Path(d) / f"round{i}")
            rounds.append({"stock": stock, "ours": mine})
            print(json.dumps(rounds[-1]), file=sys.stderr)
    s50 = statistics.median(r["stock"]["stock_m2e_ms_p50"] for r in rounds)
    o50 = statistics.median(r["ours"]["ours_m2e_ms_p50"] for r in rounds)
    result: dict[str, Any] = {
        "stock_m2e_ms_p50": s50,
        "ours_m2e_ms_p50": o50,
        "m2e_vs_stock": round(o50 / s50, 3),
        "rounds": rounds,
    }
    if args.cpu_seconds > 0:
        result["cpu"] = measure_endpoint_cpu(args.sample, args.cpu_seconds).summary()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
