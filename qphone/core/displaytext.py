"""Text that came from the peer (or from anyone on the path), made safe to show on a terminal.

:func:`printable` keeps letters, digits, punctuation and spaces of any script, and writes every
other character (C0/C1 controls such as ESC, so no terminal escape sequence survives; format
characters such as bidi overrides; line and paragraph separators; unassigned code points) as a
visible escape (``\\x1b``, ``\\u202e``). The result is one line, at most ``limit`` characters.
"""

from __future__ import annotations

import unicodedata

_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: str, limit: int = 300) -> str:
    """``text`` as one safe line of at most ``limit`` characters (``...`` marks a cut)."""
    out = []
    size = 0
    for ch in text:
        piece = _escape(ch) if unicodedata.category(ch) in _UNSAFE_CATEGORIES else ch
        if size + len(piece) > limit:
            out.append("...")
            break
        out.append(piece)
        size += len(piece)
    return "".join(out)
