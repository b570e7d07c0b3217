"""How to run a console script of this installation, as a command a user can paste.

The venv is usually not on the PATH (``make setup`` does not activate it), so a banner that says
``qphone call ...`` fails with "command not found" when pasted.  :func:`script_command` gives
the script next to the running Python: ``.venv/bin/qphone`` when the current directory is the
checkout that holds the venv, else its absolute path; the bare name only when it is not installed
there (then it must be on the PATH).
"""

from __future__ import annotations

import sys
from pathlib import Path


def script_command(name: str) -> str:
    """``name`` (``qphone``, ``qkd-keyserver``) as a command that runs from the current
    directory."""
    script = Path(sys.executable).parent / name
    if not script.exists():
        return name
    absolute = script.absolute()
    try:
        relative = absolute.relative_to(Path.cwd())
    except ValueError:
        return str(absolute)
    return str(relative) if len(relative.parts) == 3 else str(absolute)  # VENV/bin/NAME
