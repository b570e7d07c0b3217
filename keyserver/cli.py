"""``qkd-keyserver``: QKD modules, KMS nodes and networks of them, on simulated BB84 links.

Each layer registers its own subcommands: :mod:`keyserver.qkd.commands` (QKD layer),
:mod:`keyserver.kms.commands` (key management layer), :mod:`keyserver.network.commands` (whole
networks and the demo pair).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any, cast

from keyserver.kms import commands as kms_commands
from keyserver.network import commands as network_commands
from keyserver.qkd import commands as qkd_commands


class _DescribedSubparsers(argparse._SubParsersAction):  # type: ignore[type-arg]
    """Subcommands whose ``--help`` starts with a description: their one-line help, as a
    sentence, when the layer that registers them gives none."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        text = kwargs.get("help")
        if text and not kwargs.get("description"):
            kwargs["description"] = text[0].upper() + text[1:] + ("" if text[-1] in ".)" else ".")
        parser: argparse.ArgumentParser = super().add_parser(name, **kwargs)
        return parser


class _Parser(argparse.ArgumentParser):
    """The parser of ``qkd-keyserver`` and of each of its subcommands (so that nested groups,
    ``network status``, ``bench link``, get descriptions too)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register("action", "parsers", _DescribedSubparsers)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="qkd-keyserver",
        description="QKD modules, KMS nodes and networks of them on simulated decoy-state BB84 "
        "links.",
    )
    # the layers take the subcommands of any ArgumentParser (ours are one)
    sub = cast(
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        p.add_subparsers(dest="command", required=True),
    )
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
