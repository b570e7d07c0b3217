"""``qkd-keyserver simulate`` without ``--json``: its result as an aligned two-column table.

Nested figures (the protocol's intensities and probabilities, CPU per side) become indented
rows under their name; numbers are shown to 6 significant digits, flags as yes/no, absent
values as ``-``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

WIDTH = 42


def _shown(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def simulation_table(result: Mapping[str, Any], indent: int = 0) -> list[str]:
    """One line per figure of ``result``; a nested mapping gets a heading and indented rows."""
    lines = []
    for key, value in result.items():
        name = " " * indent + key.replace("_", " ")
        if isinstance(value, Mapping):
            lines.append(name + ":")
            lines.extend(simulation_table(value, indent + 2))
        else:
            lines.append(f"{name:<{WIDTH}} {_shown(value)}")
    return lines
