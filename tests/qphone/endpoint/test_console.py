"""The console: messages scroll, each endpoint keeps one status line below them, never mixed.

A small terminal model (carriage return, erase to end of line, cursor up, newline) replays what
the consoles wrote and gives the screen a user would see.
"""

from __future__ import annotations

from qphone.endpoint.console import Console, StatusBoard


class Screen:
    """A terminal that understands what the board writes: \\r, \\n, ESC[K and ESC[1A."""

    def __init__(self, tty: bool = True) -> None:
        self.rows: list[str] = [""]
        self.row = 0
        self.col = 0
        self.tty = tty
        self.raw = ""

    def write(self, text: str) -> int:
        self.raw += text
        i = 0
        while i < len(text):
            if text.startswith("\x1b[K", i):
                self.rows[self.row] = self.rows[self.row][: self.col]
                i += 3
            elif text.startswith("\x1b[1A", i):
                self.row = max(0, self.row - 1)
                i += 4
            elif text[i] == "\r":
                self.col = 0
                i += 1
            elif text[i] == "\n":
                self.row += 1
                self.col = 0
                if self.row == len(self.rows):
                    self.rows.append("")
                i += 1
            else:
                line = self.rows[self.row]
                line = line[: self.col].ljust(self.col) + text[i] + line[self.col + 1 :]
                self.rows[self.row] = line
                self.col += 1
                i += 1
        return len(text)

    def flush(self) -> None:
        return None

    def isatty(self) -> bool:
        return self.tty

    @property
    def lines(self) -> list[str]:
        rows = list(self.rows)
        while rows and not rows[-1]:
            rows.pop()
        return rows


def test_two_endpoints_keep_one_status_line_each_below_the_messages() -> None:
    screen = Screen()
    board = StatusBoard(screen, live=True)
    alice = Console(screen, True, prefix="[alice] ", board=board)
    bob = Console(screen, True, prefix="[bob]   ", board=board)
    alice.say("calling 127.0.0.1:7000 ...")
    bob.say("call from alice: handshake ...")
    for i in range(3):
        alice.show_status(f"in call | SAS a b c d | frame {i}")
        bob.show_status(f"in call | SAS a b c d | frame {i}")
        if i == 1:
            bob.warn("something to know")
    assert screen.lines == [
        "[alice] calling 127.0.0.1:7000 ...",
        "[bob]   call from alice: handshake ...",
        "[bob]   WARNING: something to know",
        "[alice] in call | SAS a b c d | frame 2",
        "[bob]   in call | SAS a b c d | frame 2",
    ]
    alice.clear_status()
    alice.say("call ended: duration of 6 s reached")
    bob.clear_status()
    bob.say("call ended: peer hung up (duration of 6 s reached)")
    assert screen.lines[-2:] == [
        "[alice] call ended: duration of 6 s reached",
        "[bob]   call ended: peer hung up (duration of 6 s reached)",
    ]
    assert not any(line.startswith("[alice] in call") for line in screen.lines)
    assert bob.warnings == ["something to know"]


def test_a_status_line_is_cut_to_the_terminal_width() -> None:
    screen = Screen()
    console = Console(screen, True)
    console.show_status("x" * 500)
    assert len(screen.lines) == 1 and 20 <= len(screen.lines[0]) < 500


def test_not_a_terminal_gets_messages_only() -> None:
    screen = Screen(tty=False)
    console = Console(screen, screen.isatty())
    console.show_status("in call | ...")
    console.say("call ended")
    assert screen.raw == "call ended\n" and not console.live_status
