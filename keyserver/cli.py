"""``qkd-keyserver``: QKD modules, KMS nodes and networks of them, on simulated BB84 links.

Each layer registers its own subcommands: :mod:`keyserver.qkd.commands` (QKD layer),
:mod:`keyserver.kms.commands` (key management layer), :mod:`keyserver.network.commands` (whole
networks and the demo pair). A command imports only the layer that registers it
(:data:`LAYERS`), and each layer imports what a subcommand needs when it runs: ``network
status`` starts in a fraction of a second, without asyncio, TLS, cryptography or numpy
(tests/keyserver/network/test_status_imports.py). ``--help`` and a mistyped command build the
whole parser.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
from collections.abc import Sequence
from typing import Any, cast

# the layers' command modules, in the order they register (network first: it owns ``bench``)
NETWORK, KMS, QKD = "keyserver.network.commands", "keyserver.kms.commands", "keyserver.qkd.commands"
ALL_LAYERS = (NETWORK, KMS, QKD)
# which layers register each subcommand (checked against the layers by a test)
LAYERS: dict[str, tuple[str, ...]] = {
    "demo": (NETWORK,),
    "network": (NETWORK,),
    "bench": (NETWORK,),  # it adds the QKD layer's ``bench link`` itself
    "node": (KMS,),
    "module": (QKD,),
    "simulate": (QKD,),
    "warmup": (QKD,),
}


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


def layers_for(argv: Sequence[str]) -> tuple[str, ...]:
    """The layers to register for `argv`: the one of its command, else (``--help``, no or an
    unknown command) all of them."""
    return LAYERS.get(argv[0], ALL_LAYERS) if argv else ALL_LAYERS


def build_parser(layers: Sequence[str] = ALL_LAYERS) -> argparse.ArgumentParser:
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
    for name in layers:
        importlib.import_module(name).register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(layers_for(argv)).parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        return int(args.func(args))
    return 130


if __name__ == "__main__":
    sys.exit(main())
