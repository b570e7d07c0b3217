"""What an endpoint tells its user: one line per message, warnings, and the live status line.

Everything goes to a :class:`TextOut` (stderr by default).  With the live status line on, each
message first clears the line the status was drawn on, and the status is redrawn in place.
"""

from __future__ import annotations

from typing import Protocol


class TextOut(Protocol):
    """Where an endpoint writes its messages and status line (stderr by default)."""

    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...

    def isatty(self) -> bool: ...


class Console:
    def __init__(self, out: TextOut, live_status: bool) -> None:
        self.out = out
        self.live_status = live_status
        self.warnings: list[str] = []

    def say(self, text: str) -> None:
        if self.live_status:
            self.out.write("\r\x1b[K")
        self.out.write(text + "\n")
        self.out.flush()

    def warn(self, text: str) -> None:
        """Say it with a WARNING prefix and keep it for the call summary."""
        self.warnings.append(text)
        self.say("WARNING: " + text)

    def show_status(self, line: str) -> None:
        self.out.write("\r\x1b[K" + line)
        self.out.flush()

    def clear_status(self) -> None:
        if self.live_status:
            self.out.write("\r\x1b[K")
