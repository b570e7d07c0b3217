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


@given(st.integers(0, (1 << 63) - 1), u64)
def test_the_otp_header_builder_is_the_canonical_encoding(frame_number: int, offset: int) -> None:
    from qphone.core.otp import otp_header, otp_kid

    assert otp_header(frame_number, offset) == FrameHeader(otp_kid(frame_number), offset).encode()


def test_both_fields_extended_take_the_fast_path_strictly() -> None:
    assert FrameHeader.decode(bytes([0x88, 9, 10])) == (FrameHeader(9, 10), 3)
    for bad in (bytes([0x88, 7, 10]), bytes([0x88, 9, 3]), bytes([0x98, 0, 9, 10])):
        with pytest.raises(FrameMalformed, match="non-minimal"):
            FrameHeader.decode(bad)
    with pytest.raises(FrameMalformed, match="truncated"):
        FrameHeader.decode(bytes([0x89, 9, 1]))
