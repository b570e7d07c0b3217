"""A status line fitted to a terminal: whole fields, the most important (first) ones kept.

The status board (:mod:`qphone.endpoint.console`) measures the terminal its status lines go to
(stderr: a redirected stdout, e.g. with ``--json``, changes nothing) and fits each line to its
width minus one column (so that the terminal never wraps it).  When the status goes to
something that is not a terminal (``--status`` forced), lines are written whole.
"""

from __future__ import annotations

import os
from typing import Any

SEPARATOR = " | "
#: columns assumed for a terminal whose size cannot be read (nor given in ``$COLUMNS``)
DEFAULT_COLUMNS = 80


def fit_status(line: str, width: int | None) -> str:
    """``line`` without its last fields until it fits in ``width`` columns (None: as it is);
    a first field alone that is still too long is cut, marked with ``~``."""
    if width is None or len(line) <= width:
        return line
    fields = line.split(SEPARATOR)
    while len(fields) > 1 and len(SEPARATOR.join(fields)) > width:
        fields.pop()
    shown = SEPARATOR.join(fields)
    return shown if len(shown) <= width else shown[: max(0, width - 1)] + "~"


def status_width(out: Any) -> int | None:
    """Columns a status line written to ``out`` may use: its terminal's width (or ``$COLUMNS``,
    or 80) minus one; None when ``out`` is not a terminal (lines are then not cut)."""
    isatty = getattr(out, "isatty", None)
    if isatty is None or not isatty():
        return None
    columns = 0
    try:
        columns = os.get_terminal_size(out.fileno()).columns
    except (AttributeError, OSError, ValueError):
        env = os.environ.get("COLUMNS", "")
        columns = int(env) if env.isdigit() else 0
    return max(20, (columns or DEFAULT_COLUMNS) - 1)
