"""qphone command line."""

from __future__ import annotations

import argparse
import json
import sys


def _cmd_demo(args: argparse.Namespace) -> int:
    from qphone.coredemo import run_core_demo

    summary = run_core_demo(seconds=args.seconds)
    if args.json:
        print(json.dumps(summary))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from qphone import bench

    which = ["crypto", "handshake"] if args.what == "all" else [args.what]
    result: dict[str, object] = {}
    for name in which:
        if name == "crypto":
            result.update(bench.bench_crypto(rounds=args.rounds))
        elif name == "handshake":
            result.update(bench.bench_handshake())
    if args.json:
        print(json.dumps(result))
    else:
        width = max(len(k) for k in result)
        for k, v in result.items():
            print(f"{k:<{width}}  {v}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qphone", description="Quantum-safe voice calls.")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="run the security core end to end and print what happened")
    d.add_argument("--seconds", type=float, default=4.0, help="seconds of frames per mode")
    d.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    d.set_defaults(func=_cmd_demo)
    b = sub.add_parser("bench", help="benchmarks against same-run baselines")
    b.add_argument("what", nargs="?", default="all", choices=["crypto", "handshake", "all"])
    b.add_argument("--json", action="store_true", help="one JSON object on stdout")
    b.add_argument("--rounds", type=int, default=15, help="measurement rounds (median)")
    b.set_defaults(func=_cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
