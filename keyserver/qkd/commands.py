"""Subcommands of the QKD layer: ``module`` (one QKD module process), ``simulate`` (the whole link
in one process), ``bench link`` (targets against the theory computed in the same run), and
``warmup`` (compile the numba kernels into their cache, for ``make setup``)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path


async def _run_module(config_path: Path) -> int:
    from keyserver.qkd.config import ConfigError, load_config
    from keyserver.qkd.module import Module

    try:
        config = load_config(config_path)
    except ConfigError as e:
        print(f"qkd-keyserver module: {e}", file=sys.stderr)
        return 2
    module = Module(config)
    try:
        await module.start()
    except ValueError as e:
        print(f"qkd-keyserver module: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"qkd-keyserver module: cannot start: {e}", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(s, stop.set)
    stopped = asyncio.create_task(stop.wait())
    failed = asyncio.create_task(module.failed.wait())
    await asyncio.wait({stopped, failed}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    failed.cancel()
    await module.stop()
    return 1 if module.failed.is_set() else 0


def _cmd_module(args: argparse.Namespace) -> int:
    from keyserver.coredumps import forbid_core_dumps
    from keyserver.jsonlog import setup_logging

    forbid_core_dumps()  # the process holds keys: none in a core file
    setup_logging(os.environ.get("QKD_LOG_LEVEL", "INFO").upper())
    return asyncio.run(_run_module(Path(args.config)))


def _cmd_simulate(args: argparse.Namespace) -> int:
    from keyserver.qkd.simulate import simulate_command

    return simulate_command(args)


def _cmd_bench_link(args: argparse.Namespace) -> int:
    from keyserver.qkd.bench import bench_command

    return bench_command(args)


def _cmd_warmup(args: argparse.Namespace) -> int:
    from keyserver.qkd.bench import warm_up

    warm_up()
    print("qkd-keyserver warmup: numba kernels compiled and cached")
    return 0


_BENCH_HELP = "QKD link targets against the theory of the same run"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from keyserver.qkd.simulate import add_simulate_arguments

    mod = sub.add_parser("module", help="run one QKD module (transmitter or receiver)")
    mod.add_argument("--config", required=True, help="module config (TOML)")
    mod.set_defaults(func=_cmd_module)

    sim = sub.add_parser("simulate", help="run the simulated BB84 link in one process")
    add_simulate_arguments(sim)
    sim.set_defaults(func=_cmd_simulate)

    if "bench" in sub.choices:
        # ``bench`` belongs to the KMS layer today (flat); until it becomes a group that calls
        # register_bench, ``bench link`` is also reachable as ``bench-link``.
        link = sub.add_parser("bench-link", help=_BENCH_HELP)
        _bench_link_arguments(link)
    else:
        bench = sub.add_parser("bench", help="benchmarks")
        register_bench(bench.add_subparsers(dest="bench_command", required=True))

    warm = sub.add_parser("warmup", help="compile the QKD numba kernels into their cache")
    warm.set_defaults(func=_cmd_warmup)


def register_bench(bench_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``bench link`` (called by whoever owns the ``bench`` command group)."""
    link = bench_sub.add_parser("link", help=_BENCH_HELP)
    _bench_link_arguments(link)


def _bench_link_arguments(link: argparse.ArgumentParser) -> None:
    link.add_argument("--distances", default="10,70,100", help="km, comma-separated")
    link.add_argument("--blocks", type=int, default=1)
    link.add_argument("--seed", type=int, default=1)
    link.add_argument("--json", action="store_true")
    link.add_argument("--processes", action="store_true",
                      help="run a real transmitter/receiver pair on loopback per distance and "
                           "report their CPU from /proc (cores per link in real time)")
    link.add_argument("--seconds", type=float, default=300.0,
                      help="--processes: real time to run after the first finished block")
    link.add_argument("--block-seconds", type=float, default=0.0,
                      help="--processes: block length in link seconds (default: the plan's)")
    link.set_defaults(func=_cmd_bench_link)
