"""``qkd-keyserver demo``: the PKI, both KMEs and the simulated link, in the foreground."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


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


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
