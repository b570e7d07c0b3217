"""``qkd-keyserver``: QKD modules, KMS nodes and networks of them, on simulated BB84 links.

Each layer registers its own subcommands: :mod:`keyserver.qkd.commands` (QKD layer),
:mod:`keyserver.kms.commands` (key management layer), :mod:`keyserver.network.commands` (whole
networks and the demo pair).
"""

from __future__ import annotations

import argparse
import contextlib
import sys

from keyserver.kms import commands as kms_commands
from keyserver.network import commands as network_commands
from keyserver.qkd import commands as qkd_commands


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="qkd-keyserver",
        description="QKD modules, KMS nodes and networks of them on simulated decoy-state BB84 "
        "links.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    network_commands.register(sub)
    kms_commands.register(sub)
    qkd_commands.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        return int(args.func(args))
    return 130


if __name__ == "__main__":
    sys.exit(main())
