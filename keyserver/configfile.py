"""keyserver's config files: the one error a bad one raises, and the one TOML loader.

Every file keyserver reads a configuration from (a module's config and a site host file,
``keyserver.qkd.config``; a node's config, ``keyserver.kms.nodeconfig``; a topology,
``keyserver.topology``) is TOML, read by :func:`load_toml` or :func:`parse_toml`, and every
mistake in one is a :class:`ConfigError`: one line that says where and how to fix it, which the
command line prints before exiting 2.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A bad config file: one line naming the file or the key, and the fix."""


def parse_toml(text: str, what: str) -> dict[str, Any]:
    """The TOML document `text` (`what` names it in the error: a path or a topology name)."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{what} is not valid TOML: {e}") from None


def load_toml(file: Path, kind: str = "config") -> dict[str, Any]:
    """The TOML document in `file` (`kind` names what it is in the error: config, topology)."""
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read {kind} {file}: {e.strerror}") from None
    return parse_toml(text, str(file))
