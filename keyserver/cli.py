"""``qkd-keyserver``: run an ETSI GS QKD 014 KME pair on a simulated decoy-state BB84 link.

Subcommands: ``demo`` (PKI + both KMEs + link, foreground), ``serve`` (one KME from a TOML config),
``simulate`` (one run of the link simulator, JSON), ``bench`` (key-pair throughput vs a demo).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path


async def _serve(config_path: Path) -> int:
    from keyserver.kms.config import ConfigError, load_config
    from keyserver.kms.kme import Kme
    from keyserver.kms.store import StoreError

    try:
        config = load_config(config_path)
    except ConfigError as e:
        print(f"qkd-keyserver serve: {e}", file=sys.stderr)
        return 2
    kme = Kme(config)
    try:
        await kme.start()
    except (StoreError, OSError) as e:
        print(f"qkd-keyserver serve: cannot start: {e}", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(s, stop.set)
    stopped = asyncio.create_task(stop.wait())
    failed = asyncio.create_task(kme.failed.wait())
    await asyncio.wait({stopped, failed}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    failed.cancel()
    await kme.stop()
    if kme.failed.is_set():
        print("qkd-keyserver serve: a background task failed (see the log)", file=sys.stderr)
        return 1
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from keyserver.jsonlog import setup_logging

    setup_logging(os.environ.get("QKD_LOG_LEVEL", "INFO").upper())
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_serve(Path(args.config)))
    return uvloop.run(_serve(Path(args.config)))


def _cmd_demo(args: argparse.Namespace) -> int:
    from keyserver.network.demo import Demo, DemoOptions

    opts = DemoOptions(
        directory=Path(args.dir).resolve(),
        port_a=args.port_a,
        port_b=args.port_b,
        distance_km=args.distance_km,
        eve_fraction=args.eve_fraction,
        seed=args.seed,
        max_key_count=args.max_key_count,
    )
    if not 0.0 <= opts.eve_fraction <= 1.0:
        print("qkd-keyserver demo: --eve-fraction must be within 0..1", file=sys.stderr)
        return 2
    return Demo(opts).run()


def _cmd_bench(args: argparse.Namespace) -> int:
    from keyserver.kms.bench import run_bench

    result = run_bench(Path(args.dir).resolve(), args.seconds, args.workers, args.size)
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>14}: {v}")
    return 0 if result["errors"] == 0 and result["duplicates"] == 0 else 1


def _cmd_simulate(args: argparse.Namespace) -> int:
    from keyserver.qkd import simulator as bb84

    return int(bb84.simulate_command(args))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qkd-keyserver", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="PKI, two KMEs and the simulated link, in the foreground")
    d.add_argument("--dir", required=True, help="directory for PKI, configs, data, demo.json")
    d.add_argument("--port-a", type=int, default=8441)
    d.add_argument("--port-b", type=int, default=8442)
    d.add_argument("--distance-km", type=float, default=10.0)
    d.add_argument("--eve-fraction", type=float, default=0.0,
                   help="intercept-resend on this fraction of pulses (0..1)")
    d.add_argument("--seed", type=int, default=None)
    d.add_argument("--max-key-count", type=int, default=100_000,
                   help="pool cap per direction, in keys of 256 bits")
    d.set_defaults(func=_cmd_demo)

    s = sub.add_parser("serve", help="one KME, configured by a TOML file")
    s.add_argument("--config", required=True)
    s.set_defaults(func=_cmd_serve)

    b = sub.add_parser("bench", help="enc_keys at A + dec_keys at B, from client processes")
    b.add_argument("--dir", required=True, help="the demo directory (reads demo.json)")
    b.add_argument("--seconds", type=float, default=10.0)
    b.add_argument("--workers", type=int, default=6, help="client processes")
    b.add_argument("--size", type=int, default=256, help="key size in bits")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=_cmd_bench)

    from keyserver.qkd.simulator import add_simulate_arguments

    m = sub.add_parser("simulate", help="run the simulated BB84 link once, print figures")
    add_simulate_arguments(m)
    m.set_defaults(func=_cmd_simulate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        return int(args.func(args))
    return 130


if __name__ == "__main__":
    sys.exit(main())
