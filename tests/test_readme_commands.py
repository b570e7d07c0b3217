"""Every command the README shows still parses: the documented commands cannot drift.

Commands are taken from the README's fenced shell blocks (with ``\\`` continuations joined and
``#`` comments dropped) and from inline code that starts with ``.venv/bin/``.  Each one that
runs ``qphone`` or ``qkd-keyserver`` (with or without ``.venv/bin/``, also behind ``ip netns
exec NS``) is parsed by the program's real argument parser, so a renamed subcommand or option,
or a value of the wrong type, fails here; nothing is executed.  ``make TARGET`` must name a
target of the Makefile.  The README's table of contents must link to headings that exist.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator

import pytest

from keyserver.cli import build_parser as keyserver_parser
from qphone.cli import build_parser as qphone_parser
from tests.support.paths import ROOT

README = (ROOT / "README.md").read_text()
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`(\.venv/bin/[^`]+)`")
PROGRAMS = {"qphone": qphone_parser, "qkd-keyserver": keyserver_parser}


COMMAND_START = (".venv/bin/", "qphone ", "qkd-keyserver ", "make ", "ip netns exec ")


def _commands() -> Iterator[str]:
    for lang, body in FENCE.findall(README):
        if lang not in ("", "sh", "bash", "console", "shell"):
            continue
        for line in re.sub(r"\\\n\s*", " ", body).splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith(COMMAND_START):
                yield line
    for span in INLINE.findall(README):
        yield " ".join(span.split())


def _program_call(command: str) -> tuple[str, list[str]] | None:
    """(program, its arguments) when ``command`` runs qphone or qkd-keyserver."""
    words = shlex.split(command)
    if words[:2] == ["ip", "netns"] and len(words) > 4:
        words = words[4:]  # ip netns exec NS PROGRAM ...
    if not words:
        return None
    name = words[0].removeprefix(".venv/bin/")
    if name not in PROGRAMS or words[1:] == ["..."]:  # "qphone ...": the program alone
        return None
    return name, words[1:]


COMMANDS = sorted(set(_commands()))
PROGRAM_CALLS = [c for c in COMMANDS if _program_call(c) is not None]


def test_the_readme_shows_commands_of_both_programs() -> None:
    names = {call[0] for c in PROGRAM_CALLS if (call := _program_call(c)) is not None}
    assert names == {"qphone", "qkd-keyserver"} and len(PROGRAM_CALLS) >= 15


@pytest.mark.parametrize("command", PROGRAM_CALLS)
def test_each_command_parses(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    call = _program_call(command)
    assert call is not None
    name, argv = call
    try:
        args = PROGRAMS[name]().parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        assert exc.code == 0, capsys.readouterr().err
        return
    except Exception as exc:  # qphone's parser raises its usage error instead of exiting
        pytest.fail(f"{command}: {exc}")
    assert getattr(args, "func", None) is not None, command


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.startswith("make ")])
def test_make_targets_exist(command: str) -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in shlex.split(command)[1:]:
        assert re.search(rf"^{re.escape(target)}:", makefile, re.M), command


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_the_table_of_contents_links_to_headings() -> None:
    anchors = {_anchor(h) for h in re.findall(r"^#{2,3} (.+)$", README, re.M)}
    contents = README.split("## Contents", 1)[1].split("\n## ", 1)[0]
    links = re.findall(r"\]\(#([^)]+)\)", contents)
    assert len(links) >= 8
    assert [link for link in links if link not in anchors] == []
