"""Subcommands of the QKD layer: ``module`` (one QKD module process), ``simulate`` (the whole link
in one process), ``bench link`` (targets against the theory computed in the same run), and
``warmup`` (compile the numba kernels into their cache, for ``make setup``)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any


async def _run_modules(config_paths: list[Path]) -> int:
    """One or more modules in this process (each with its own northbound listener, certificate
    and store); emulated modules import no numpy, so a host of a site's emulated modules stays
    small (docs/network.md, "Lean processes")."""
    import asyncio  # here: the other subcommands do not need it

    from keyserver.qkd.config import ConfigError, Fidelity, load_config, module_config_files

    configs = []
    try:
        for given in config_paths:
            for path in module_config_files(given):
                configs.append(load_config(path))
    except ConfigError as e:
        print(f"qkd-keyserver module: {e}", file=sys.stderr)
        return 2
    modules: list[Any] = []
    for config in configs:
        if config.fidelity is Fidelity.EMULATED:
            from keyserver.qkd.emulatedmodule import EmulatedModule

            modules.append(EmulatedModule(config))
        else:
            from keyserver.qkd.module import Module

            modules.append(Module(config))
    started: list[Any] = []
    code = 0
    for module in modules:
        try:
            await module.start()
            started.append(module)
        except ValueError as e:
            print(f"qkd-keyserver module {module.config.id}: {e}", file=sys.stderr)
            code = 2
        except OSError as e:
            print(f"qkd-keyserver module {module.config.id}: cannot start: {e}", file=sys.stderr)
            code = 1
        if code:
            for done in started:
                await done.stop()
            return code
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(s, stop.set)
    waits = {asyncio.create_task(stop.wait())}
    waits |= {asyncio.create_task(mod.failed.wait()) for mod in started}
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for t in waits:
        t.cancel()
    for mod in started:
        await mod.stop()
    return 1 if any(mod.failed.is_set() for mod in started) else 0


def _cmd_module(args: argparse.Namespace) -> int:
    import asyncio  # here: the other subcommands do not need it

    from keyserver.coredumps import forbid_core_dumps
    from keyserver.jsonlog import setup_logging

    forbid_core_dumps()  # the process holds keys: none in a core file
    setup_logging(os.environ.get("QKD_LOG_LEVEL", "INFO").upper())
    return asyncio.run(_run_modules([Path(c) for c in args.config]))


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
    from keyserver.qkd.simulateoptions import add_simulate_arguments

    mod = sub.add_parser(
        "module",
        help="run a QKD module (transmitter or receiver), or several in one process",
        description="Run the QKD module of each --config in this process (each keeps its own "
        "northbound listener, certificate and store). Emulated modules are lean: one process "
        "may host all of a site's emulated modules.",
    )
    mod.add_argument(
        "--config",
        required=True,
        action="append",
        help="module config (TOML), or a site host file naming several; repeat "
        "to host several modules",
    )
    mod.set_defaults(func=_cmd_module)

    sim = sub.add_parser("simulate", help="run the simulated BB84 link in one process")
    add_simulate_arguments(sim)
    sim.set_defaults(func=_cmd_simulate)

    if "bench" not in sub.choices:  # the network layer registers ``bench link`` in its group
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
    link.add_argument(
        "--blocks",
        type=int,
        default=1,
        help="post-processing blocks simulated per distance (default 1)",
    )
    link.add_argument(
        "--seed",
        type=int,
        default=1,
        help="seed of the simulation: the same figures on every run (default 1)",
    )
    link.add_argument(
        "--json",
        action="store_true",
        help="one JSON object (results and targets) instead of the tables",
    )
    link.add_argument(
        "--processes",
        action="store_true",
        help="run a real transmitter/receiver pair on loopback per distance and "
        "report their CPU from /proc (cores per link in real time)",
    )
    link.add_argument(
        "--seconds",
        type=float,
        default=300.0,
        help="--processes: real time to run after the first finished block",
    )
    link.add_argument(
        "--block-seconds",
        type=float,
        default=0.0,
        help="--processes: block length in link seconds (default: the plan's)",
    )
    link.set_defaults(func=_cmd_bench_link)
