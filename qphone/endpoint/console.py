"""What an endpoint tells its user: one line per message, warnings, and the live status line.

Everything goes to a :class:`TextOut` (stderr by default, also with ``--json``, whose summary
goes to stdout).  A :class:`StatusBoard` owns one terminal: messages scroll above, and below
them every endpoint of the process that shows a live status has exactly one status line,
fitted to the width of the terminal it is written to (whole fields, the least important
dropped: :mod:`qphone.endpoint.statuslinefit`) and redrawn in place, so that two endpoints
(``qphone demo``) never interleave.  Each endpoint talks through its own :class:`Console` (with a
prefix such as ``[bob] ``).
"""

from __future__ import annotations

from typing import Protocol

from qphone.endpoint.statuslinefit import fit_status, status_width

_ERASE_LINE = "\r\x1b[K"
_UP = "\x1b[1A"


class TextOut(Protocol):
    """Where an endpoint writes its messages and status line (stderr by default)."""

    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...

    def isatty(self) -> bool: ...


class StatusBoard:
    """One output shared by the endpoints of a process: messages, then one status line each."""

    def __init__(self, out: TextOut, live: bool) -> None:
        self.out = out
        self.live = live
        self._lines: dict[int, str] = {}  # by console, in the order they first showed a status
        self._drawn = 0  # status lines on the screen now

    def _width(self) -> int | None:
        return status_width(self.out)

    def _erase(self) -> str:
        if not self._drawn:
            return ""
        return _ERASE_LINE + (_UP + _ERASE_LINE) * (self._drawn - 1)

    def _draw(self) -> str:
        width = self._width()
        lines = [fit_status(line, width) for line in self._lines.values()]
        self._drawn = len(lines)
        return "\n".join(lines)

    def message(self, text: str) -> None:
        """A line above the status lines."""
        if self.live:
            self.out.write(self._erase() + text + "\n" + self._draw())
        else:
            self.out.write(text + "\n")
        self.out.flush()

    def show(self, key: int, line: str) -> None:
        """Set (and redraw) the status line of ``key``."""
        if not self.live:
            return
        self._lines[key] = line
        self.out.write(self._erase() + self._draw())
        self.out.flush()

    def remove(self, key: int) -> None:
        """Take the status line of ``key`` off the screen."""
        if not self.live or key not in self._lines:
            return
        del self._lines[key]
        self.out.write(self._erase() + self._draw())
        self.out.flush()


class Console:
    """One endpoint's messages and status line, on its own board or a shared one."""

    def __init__(
        self,
        out: TextOut,
        live_status: bool,
        *,
        prefix: str = "",
        board: StatusBoard | None = None,
    ) -> None:
        self.board = board or StatusBoard(out, live_status)
        self.live_status = live_status and self.board.live
        self.prefix = prefix
        self.warnings: list[str] = []

    def say(self, text: str) -> None:
        self.board.message(self.prefix + text)

    def warn(self, text: str) -> None:
        """Say it with a WARNING prefix and keep it for the call summary."""
        self.warnings.append(text)
        self.say("WARNING: " + text)

    def show_status(self, line: str) -> None:
        if self.live_status:
            self.board.show(id(self), self.prefix + line)

    def clear_status(self) -> None:
        self.board.remove(id(self))
