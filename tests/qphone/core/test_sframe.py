import pytest
from hypothesis import given
from hypothesis import strategies as st

from qphone.core.errors import FrameMalformed
from qphone.core.sframe import FrameHeader

u64 = st.integers(min_value=0, max_value=(1 << 64) - 1)


@given(u64, u64, st.binary(max_size=20))
def test_round_trip_and_length(kid: int, ctr: int, tail: bytes) -> None:
    h = FrameHeader(kid, ctr)
    enc = h.encode()
    got, n = FrameHeader.decode(enc + tail)
    assert got == h and n == len(enc)


def test_small_values_fit_in_one_byte() -> None:
    assert FrameHeader(3, 7).encode() == bytes([0x37])
    assert FrameHeader(8, 0).encode() == bytes([0x80, 8])
    assert FrameHeader(0, 256).encode() == bytes([0x09, 1, 0])


@given(st.binary(max_size=18))
def test_decode_never_crashes(data: bytes) -> None:
    try:
        h, n = FrameHeader.decode(data)
    except FrameMalformed:
        return
    assert h.encode() == data[:n]  # only canonical encodings are accepted


def test_non_minimal_and_truncated_rejected() -> None:
    with pytest.raises(FrameMalformed, match="non-minimal"):
        FrameHeader.decode(bytes([0x80, 5]))
    with pytest.raises(FrameMalformed, match="non-minimal"):
        FrameHeader.decode(bytes([0x09, 0, 9]))
    with pytest.raises(FrameMalformed, match="truncated"):
        FrameHeader.decode(bytes([0x0F, 1, 2]))
    with pytest.raises(FrameMalformed, match="empty"):
        FrameHeader.decode(b"")
