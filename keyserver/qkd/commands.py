"""``qkd-keyserver simulate``: run the simulated BB84 link once and print its figures."""

from __future__ import annotations

import argparse


def _cmd_simulate(args: argparse.Namespace) -> int:
    from keyserver.qkd import simulator as bb84

    return int(bb84.simulate_command(args))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from keyserver.qkd.simulator import add_simulate_arguments

    m = sub.add_parser("simulate", help="run the simulated BB84 link once, print figures")
    add_simulate_arguments(m)
    m.set_defaults(func=_cmd_simulate)
