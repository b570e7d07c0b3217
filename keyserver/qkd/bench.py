"""``qkd-keyserver bench link``: the issue-9 targets, measured, beside the theory of the same run.

For each distance it runs blocks of the in-process link (the same machines, codec and framing as
the module processes, :mod:`keyserver.qkd.simulate`) and prints what was measured against the
target and the bound computed in the same run: reconciliation efficiency f, the final key as a
fraction of the same protocol's asymptotic bound, key at 100 km, final key per CPU-second (both
sides' post-processing and the simulated quantum channel together) and the cores a link needs in
real time. CPU figures on a shared machine are noisy; the ratios to the theory are not.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass

from keyserver.qkd.physics import LinkParams
from keyserver.qkd.simulate import LinkRun, report


@dataclass(frozen=True)
class Target:
    name: str
    measured: float
    target: str
    ok: bool


def warm_up() -> None:
    """Compile every numba kernel once (``cache=True`` keeps them for later processes): a short
    Cascade run, then one block of the link that yields key (so sifting, Cascade over segments,
    PA and the channel kernels all run)."""
    import numpy as np

    from keyserver.qkd.cascade import CascadeAlice, CascadeBob, ParityRequest, schedule

    rng = np.random.default_rng(1)
    n = 70_000
    alice = rng.integers(0, 2, n, dtype=np.uint8)
    bob = alice ^ (rng.random(n) < 0.03).astype(np.uint8)
    seed = bytes(32)
    a, b = CascadeAlice(alice, seed, n), CascadeBob(bob, seed, schedule(0.03, n))
    req: ParityRequest | None = b.first_request()
    while req is not None:
        ans = (
            a.start_pass(req.start_block)
            if req.start_block
            else a.answer(req.passes, req.lo, req.hi)
        )
        req = b.on_answer(ans)
    run = LinkRun(LinkParams(distance_km=5.0, block_pulses=150_000_000), seed=1)
    stats = run.run_block()
    if stats.aborted:
        raise RuntimeError(f"warm-up block aborted ({stats.reason}): kernels not all compiled")


def measure(distance: float, blocks: int, seed: int | None) -> dict[str, object]:
    run = LinkRun(LinkParams(distance_km=distance), seed=seed)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(blocks):
        run.run_block()
    return report(run, time.perf_counter() - wall0, time.process_time() - cpu0)


def _num(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"not a number: {value!r}")
    return float(value)


def targets(results: dict[float, dict[str, object]]) -> list[Target]:
    out: list[Target] = []
    for d, r in results.items():
        f = _num(r["ec_efficiency"])
        q = _num(r["qber"])
        if 0.02 <= q <= 0.035 and f > 0:
            out.append(Target(f"f at {d:g} km (QBER {100 * q:.2f} %)", f, "<= 1.15", f <= 1.15))
        ratio = _num(r["ratio_to_asymptotic"])
        if d == 10:
            out.append(Target("key / asymptotic bound, 10 km", ratio, ">= 0.8", ratio >= 0.8))
            rate = _num(r["postprocessing_bits_per_cpu_second"]) / 1e6
            out.append(
                Target("Mbit/s key per CPU-s, 10 km (post-processing)", rate, ">= 1.5", rate >= 1.5)
            )
            total = _num(r["secret_bits_per_cpu_second"]) / 1e6
            out.append(
                Target(
                    "Mbit/s key per CPU-s, 10 km (+ simulated fibre)", total, ">= 1.5", total >= 1.5
                )
            )
        if d == 70:
            out.append(Target("key / asymptotic bound, 70 km", ratio, ">= 0.6", ratio >= 0.6))
            core = _num(r["core_per_link_realtime"])
            out.append(Target("cores per 70 km link in real time", core, "<= 0.1", core <= 0.1))
        if d == 100:
            bits = _num(r["secret_bits"])
            out.append(Target("secret bits at 100 km (one block)", bits, "> 0", bits > 0))
    return out


def bench_command(args: argparse.Namespace) -> int:
    try:
        distances = [float(x) for x in args.distances.split(",") if x.strip()]
    except ValueError:
        print("bench link: --distances must be comma-separated numbers", file=sys.stderr)
        return 2
    if getattr(args, "processes", False):
        return _processes_command(args, distances)
    results = {d: measure(d, args.blocks, args.seed) for d in distances}
    rows = targets(results)
    if args.json:
        print(
            json.dumps(
                {
                    "results": {str(k): v for k, v in results.items()},
                    "targets": [r.__dict__ for r in rows],
                }
            )
        )
        return 0
    print(
        f"{'distance':>8} {'QBER':>7} {'f':>6} {'key b/pulse':>12} {'asymptotic':>11} "
        f"{'ratio':>6} {'Mbit/CPU-s':>10} {'PP only':>8} {'cores RT':>8} {'block s':>8}"
    )
    for d, r in results.items():
        v = {
            k: _num(r[k])
            for k in (
                "qber",
                "ec_efficiency",
                "secret_bits_per_pulse",
                "asymptotic_bits_per_pulse",
                "ratio_to_asymptotic",
                "secret_bits_per_cpu_second",
                "postprocessing_bits_per_cpu_second",
                "core_per_link_realtime",
                "seconds_simulated",
                "blocks",
            )
        }
        print(
            f"{d:8g} {v['qber']:7.4f} {v['ec_efficiency']:6.3f} "
            f"{v['secret_bits_per_pulse']:12.4g} {v['asymptotic_bits_per_pulse']:11.4g} "
            f"{v['ratio_to_asymptotic']:6.3f} {v['secret_bits_per_cpu_second'] / 1e6:10.3f} "
            f"{v['postprocessing_bits_per_cpu_second'] / 1e6:8.3f} "
            f"{v['core_per_link_realtime']:8.3f} "
            f"{v['seconds_simulated'] / max(v['blocks'], 1):8.1f}"
        )
    print()
    for t in rows:
        print(f"{t.name:45s} {t.measured:10.4g}  target {t.target:8s} {'ok' if t.ok else 'MISSED'}")
    return 0


def _processes_command(args: argparse.Namespace, distances: list[float]) -> int:
    from keyserver.qkd.benchprocesses import print_table, run_pair

    if not 10 <= args.seconds <= 86_400 or args.block_seconds < 0:
        print(
            "bench link: --seconds must be within 10..86400, --block-seconds >= 0", file=sys.stderr
        )
        return 2
    load = os.getloadavg()
    results = [run_pair(d, args.seconds, args.block_seconds, args.seed) for d in distances]
    load_end = os.getloadavg()
    if args.json:
        print(json.dumps({"processes": results, "loadavg": [load, load_end]}))
        return 0
    print_table(results)
    print(
        f"load average {load[0]:.1f} at the start, {load_end[0]:.1f} at the end "
        f"({os.cpu_count()} CPUs)"
    )
    return 0 if all("core_per_link_realtime" in r for r in results) else 1
