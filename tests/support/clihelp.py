"""Every subcommand of an argparse command line, and what its ``--help`` lacks."""

from __future__ import annotations

import argparse
from collections.abc import Iterator


def subcommands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """(the words after the program's name, the parser) for the program and every subcommand,
    nested groups included."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from subcommands(child, (*path, name))


def help_gaps(parser: argparse.ArgumentParser) -> list[str]:
    """What ``parser``'s --help lacks: a description, help text for an option or argument."""
    gaps = [] if (parser.description or "").strip() else ["no description"]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        if action.help is argparse.SUPPRESS:
            continue
        if not (action.help or "").strip():
            gaps.append(f"no help for {'/'.join(action.option_strings) or action.dest}")
    return gaps
