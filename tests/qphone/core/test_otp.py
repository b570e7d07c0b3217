"""Wegman-Carter MAC and pad streams."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qphone.core.errors import FrameKeyUnavailable, FrameReplayed
from qphone.core.otp import PRIMES, PadReceiver, PadSender, WegmanCarterMac, forgery_bound


def _is_probable_prime(n: int) -> bool:
    d, r = n - 1, 0
    while d % 2 == 0:
        d //= 2
        r += 1
    for a in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41):
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def test_field_moduli_are_prime_and_just_below_2_to_t() -> None:
    for bits, p in PRIMES.items():
        assert _is_probable_prime(p)
        assert 2 ** (bits - 1) < p < 2**bits


def test_forgery_bound_values() -> None:
    # 80-byte payload + 4-byte header with a 64-bit tag: 12 blocks of 7 bytes
    assert forgery_bound(84, 64) == pytest.approx(2 * 12 / PRIMES[64])
    assert forgery_bound(84, 32) > 1e-9  # 32-bit tags are weak: documented
    assert forgery_bound(84, 128) < 1e-36


@settings(max_examples=200)
@given(st.sampled_from([32, 64, 128]), st.binary(max_size=200), st.binary(max_size=200))
def test_tag_depends_on_message_and_pad(bits: int, m1: bytes, m2: bytes) -> None:
    mac = WegmanCarterMac(bits, os.urandom(bits // 8))
    pad = os.urandom(bits // 8)
    t1 = mac.tag(m1, pad)
    assert len(t1) == bits // 8
    assert mac.tag(m1, pad) == t1
    if m1 != m2 and bits >= 64:
        assert mac.tag(m2, pad) != t1  # collisions have probability < 2^-50 here
    other = bytes([pad[0] ^ 1]) + pad[1:]
    assert mac.tag(m1, other) != t1  # the pad masks the tag one-to-one


def test_length_extension_with_zero_bytes_changes_tag() -> None:
    mac = WegmanCarterMac(64, os.urandom(8))
    pad = os.urandom(8)
    assert mac.tag(b"abc", pad) != mac.tag(b"abc\x00", pad)
    assert mac.tag(b"", pad) != mac.tag(b"\x00", pad)


def test_pad_streams_round_trip_and_never_reuse() -> None:
    tx, rx = PadSender(64), PadReceiver(64, window_bytes=4096)
    stream = os.urandom(20000)
    tx.append(stream)
    tx.mark_usable(len(stream))
    rx.append(stream[:10000])
    frames = [tx.protect(random.randbytes(random.randint(0, 90))) for _ in range(150)]
    delivered = 0
    for f in frames:
        try:
            rx.unprotect(f)
            delivered += 1
        except FrameKeyUnavailable:
            break  # beyond the part of the stream the receiver holds
    assert delivered > 50
    with pytest.raises(FrameReplayed):
        rx.unprotect(frames[0])
    # used pad is zeroed on both sides
    assert tx._buf[: tx.position - tx._base].count(0) == tx.position - tx._base
    held = tx.held
    assert tx.close() == held
    assert tx.held <= 0 and not tx._buf


def test_receiver_window_drops_old_ranges() -> None:
    tx, rx = PadSender(32), PadReceiver(32, window_bytes=256)
    pad = os.urandom(5000)
    tx.append(pad)
    tx.mark_usable(5000)
    rx.append(pad)
    frames = [tx.protect(bytes(20)) for _ in range(100)]
    rx.unprotect(frames[99])
    with pytest.raises(FrameReplayed, match="out of window"):
        rx.unprotect(frames[0])
    assert rx.unprotect(frames[98]) == bytes(20)


@settings(max_examples=300)
@given(st.sampled_from([32, 64]), st.binary(max_size=300), st.binary(min_size=8, max_size=8))
def test_c_accelerator_matches_reference(bits: int, msg: bytes, key: bytes) -> None:
    from qphone.core import otp

    assert otp._fast is not None, "the C accelerator was not built (setup.py ext_modules)"
    mac = WegmanCarterMac(bits, key[: bits // 8])
    assert mac.poly(msg) == mac.poly_reference(msg)
    tl = bits // 8
    pad = os.urandom(tl + len(msg))
    header = b"\x18\x05"
    sealed = mac.seal(header, msg, pad)
    body = header + bytes(x ^ y for x, y in zip(msg, pad[tl:], strict=True))
    assert sealed == body + mac.tag(body, pad[:tl])  # tag() is the reference path
    assert mac.open(sealed, len(header), pad) == msg
    bad = sealed[:-1] + bytes([sealed[-1] ^ 1])
    assert mac.open(bad, len(header), pad) is None


@settings(max_examples=30, deadline=None)
@given(sizes=st.lists(st.integers(0, 1500), min_size=1, max_size=400), skip=st.integers(0, 300))
def test_sender_headers_are_the_canonical_otp_headers(sizes: list[int], skip: int) -> None:
    """The sender's cached header layout gives exactly otp_header(frame number, offset),
    also across the byte-size boundaries of both fields."""
    from qphone.core.otp import otp_header
    from qphone.core.sframe import parse_header

    sender = PadSender(64)
    sender.frame_number = skip  # as if earlier slots had passed
    pad = bytes(8 + sum(8 + n for n in sizes))
    sender.append(pad)
    sender.mark_usable(len(pad))
    expected_offset = 8  # after the session hash key
    for i, n in enumerate(sizes):
        frame = sender.protect(bytes(n))
        kid, offset, length = parse_header(frame)
        assert (kid >> 1, offset) == (skip + i, expected_offset)
        assert frame[:length] == otp_header(skip + i, offset)
        expected_offset += 8 + n


@pytest.mark.parametrize("bits", [32, 64, 128])  # 32/64: the C accelerator; 128: Python
def test_seal_at_and_open_at_take_the_pad_from_the_stream_and_erase_it(bits: int) -> None:
    tl = bits // 8
    mac = WegmanCarterMac(bits, os.urandom(tl))
    payload, header = os.urandom(50), b"\x18\x05"
    stream = bytearray(os.urandom(300))
    pad = bytes(stream[100 : 100 + tl + 50])
    frame = mac.seal_at(header, payload, stream, 100)
    assert frame == mac.seal(header, payload, pad)
    assert stream[100 : 100 + tl + 50] == bytes(tl + 50)  # erased where it was taken
    rx = bytearray(stream)
    rx[100 : 100 + tl + 50] = pad
    bad = frame[:-1] + bytes([frame[-1] ^ 1])
    assert mac.open_at(bad, len(header), rx, 100) is None
    assert rx[100 : 100 + tl + 50] == pad  # a forgery consumes no pad
    assert mac.open_at(frame, len(header), rx, 100) == payload
    assert rx == stream  # erased on acceptance, nothing else touched
    for start in (-1, 300 - tl - 49):  # outside the stream: refused, nothing written
        with pytest.raises(ValueError):
            mac.seal_at(header, payload, stream, start)
        with pytest.raises(ValueError):
            mac.open_at(frame, len(header), rx, start)
