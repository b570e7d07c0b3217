"""The unauthenticated abort message (qphone.core.abort): round trip, bounds, unknown kinds."""

from __future__ import annotations

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


@given(kind=st.sampled_from(list(AbortKind)), reason=st.text(max_size=100))
def test_round_trip(kind: AbortKind, reason: str) -> None:
    wire = Abort(kind, reason).encode()
    assert is_abort(wire)
    assert decode_abort(wire) == Abort(kind, reason)


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
