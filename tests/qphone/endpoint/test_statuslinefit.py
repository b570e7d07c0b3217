"""The status line fits the terminal it is written to, in whole fields, most important first."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import termios

from hypothesis import given
from hypothesis import strategies as st

from qphone.endpoint.statuslinefit import SEPARATOR, fit_status, status_width

OTP_LINE = SEPARATOR.join(
    [
        "in call",
        "SAS airport scorpion inmate connect",
        "pad 2.3 s",
        "loss 0.0%",
        "QKD 1.8 kbit",
        "RTT 1.3 ms",
        "epoch tx 3/rx 3",
        "jb 45 ms",
        "in -22 dBFS",
    ]
)


def test_80_columns_keep_the_sas_and_the_pad_whole() -> None:
    line = fit_status("[alice] " + OTP_LINE, 79)
    assert len(line) <= 79
    assert line.startswith("[alice] in call | SAS airport scorpion inmate connect | pad 2.3 s")
    assert line.split(SEPARATOR)[-1] in OTP_LINE.split(SEPARATOR)  # no field cut in two


def test_a_wide_terminal_or_no_terminal_shows_it_all() -> None:
    assert fit_status(OTP_LINE, 200) == OTP_LINE
    assert fit_status(OTP_LINE, None) == OTP_LINE


@given(
    st.lists(st.text(st.characters(blacklist_characters="|"), max_size=30), min_size=1),
    st.integers(1, 300),
)
def test_fitted_lines_are_whole_leading_fields(fields: list[str], width: int) -> None:
    line = SEPARATOR.join(fields)
    fitted = fit_status(line, width)
    assert len(fitted) <= width
    if not fitted.endswith("~"):
        assert line.startswith(fitted) and (fitted == line or line[len(fitted) :][:3] == SEPARATOR)


def test_the_width_is_the_terminal_of_the_status_not_of_stdout() -> None:
    """With --json stdout is a pipe; the status goes to stderr, a terminal: its width counts."""
    parent, child = pty.openpty()
    try:
        fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 200, 0, 0))
        with os.fdopen(os.dup(child), "w") as tty:
            assert status_width(tty) == 199
    finally:
        os.close(parent)
        os.close(child)


def test_not_a_terminal_is_not_cut() -> None:
    with open(os.devnull, "w") as out:
        assert status_width(out) is None
