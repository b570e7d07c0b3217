"""The unauthenticated abort message (qphone.core.abort): round trip, bounds, unknown kinds."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qphone.core.abort import (
    ABORT_PREFIX,
    MAX_REASON_BYTES,
    Abort,
    AbortKind,
    decode_abort,
    is_abort,
)

SAFE = st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"))
UNSAFE = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


@given(kind=st.sampled_from(list(AbortKind)), reason=st.text(SAFE, max_size=60))
def test_round_trip(kind: AbortKind, reason: str) -> None:
    wire = Abort(kind, reason).encode()
    assert is_abort(wire)
    assert decode_abort(wire) == Abort(kind, reason)


@given(kind=st.sampled_from(list(AbortKind)), reason=st.text(max_size=400))
def test_decoded_reason_is_one_printable_line(kind: AbortKind, reason: str) -> None:
    shown = decode_abort(Abort(kind, reason).encode()).reason
    assert not {unicodedata.category(c) for c in shown} & UNSAFE
    assert len(shown) <= MAX_REASON_BYTES + 3


def test_terminal_escapes_are_shown_not_obeyed() -> None:
    text = "\x1b[2J\x1b]0;pwned\x07ok\r\nfake line\u202e"
    wire = ABORT_PREFIX + bytes((AbortKind.IDENTITY_REFUSED,)) + text.encode()
    shown = decode_abort(wire).reason
    assert shown == r"\x1b[2J\x1b]0;pwned\x07ok\x0d\x0afake line\u202e"


def test_reason_is_bounded_and_unknown_kinds_read_as_failed() -> None:
    wire = Abort(AbortKind.POLICY_REFUSED, "x" * 1000).encode()
    assert len(wire) == len(ABORT_PREFIX) + 1 + MAX_REASON_BYTES
    assert decode_abort(ABORT_PREFIX + b"\x09why").kind is AbortKind.FAILED
    assert decode_abort(ABORT_PREFIX) == Abort(AbortKind.FAILED, "")
    assert decode_abort(ABORT_PREFIX + b"\x01\xff\xfe").reason == "\ufffd\ufffd"


@given(data=st.binary(max_size=400))
def test_arbitrary_bytes(data: bytes) -> None:
    if is_abort(data):
        assert isinstance(decode_abort(data), Abort)
    else:
        with pytest.raises(ValueError):
            decode_abort(data)
