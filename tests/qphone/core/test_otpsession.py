"""OTP mode: the pad accounting, pad never reused, exhaustion refused, rejections that change
nothing, the opened frame's number."""

from __future__ import annotations

import random

import pytest

from qphone.core.callparams import CallParams, Mode
from qphone.core.errors import FrameRejected, FrameReplayed, KeyExhausted
from qphone.core.sframe import FrameHeader
from tests.support.inmemorycalls import make_call


def test_otp_accounting_matches_theory() -> None:
    params = CallParams(mode=Mode.OTP, otp_tag_bits=64, pad_block_bits=8192)
    call = make_call(params)
    sizes = [random.randint(20, 80) for _ in range(300)]
    for i, n in enumerate(sizes):
        f = call.initiator.protect(bytes(n), i * 0.02)
        call.responder.unprotect(f, i * 0.02)
        call.pump()
    acc = call.initiator.key_accounting()
    assert acc.pad == 8 * sum(sizes)
    assert acc.mac == 64 * len(sizes) + 64  # a tag per frame + the session hash key
    left = call.initiator.pad_left_bytes
    assert left > 0
    call.initiator.close()
    assert call.initiator.pad_left_bytes == 0  # erased
    closed = call.initiator.key_accounting()
    # every bit fetched was used or erased: the rest of this side's stream, and all of the
    # responder's stream (it sent no frame)
    assert closed.received == 0
    assert closed.erased_unused >= 8 * left
    assert closed.fetched == closed.used + closed.erased_unused
    call.responder.close()
    res = call.responder.key_accounting()
    assert res.received == acc.pad + acc.mac  # the responder saw every frame
    assert res.fetched == res.used + res.erased_unused


def test_otp_pad_never_reused_and_exhaustion_refused() -> None:
    params = CallParams(mode=Mode.OTP, pad_block_bits=1024, lookahead=1)
    call = make_call(params)
    offsets = set()
    for i in range(40):
        f = call.initiator.protect(b"y" * 30, i * 0.02)
        h, _ = FrameHeader.decode(f)
        assert h.ctr not in offsets
        offsets.add(h.ctr)
        assert call.responder.unprotect(f, i * 0.02).frame_number == i
        call.pump()
    # without key supply the sender refuses instead of reusing pad
    call2 = make_call(params)
    with pytest.raises(KeyExhausted, match="exhausted"):
        for i in range(1000):
            call2.initiator.protect(b"z" * 100, i * 0.02)  # never pumped: no PadReady arrives


def test_otp_rejections_leave_state_unchanged() -> None:
    call = make_call(CallParams(mode=Mode.OTP, pad_block_bits=8192))
    a, b = call.initiator, call.responder
    good = a.protect(b"secret voice", 0.0)
    for bad in (
        bytes([good[0] ^ 0x01]) + good[1:],
        good[:3] + bytes([good[3] ^ 4]) + good[4:],
        good[:-1] + bytes([good[-1] ^ 1]),
        good[:2],
        good + b"\x00",
    ):
        with pytest.raises(FrameRejected):
            b.unprotect(bad, 0.0)
    assert b.unprotect(good, 0.0).payload == b"secret voice"
    with pytest.raises(FrameReplayed):
        b.unprotect(good, 0.0)


def test_the_responder_reports_its_position_and_holds_no_horizon() -> None:
    call = make_call(CallParams(mode=Mode.OTP, pad_block_bits=8192), pad_lookahead_s=0.5)
    assert call.initiator.pad_horizon_s == 0.5
    assert call.responder.pad_horizon_s is None and call.responder.send_epoch == 0
    for i in range(40):  # every frame lost: only the responder's reports tell its position
        call.responder.protect(bytes(100), i * 0.02)
        call.pump()
    used = 8 + 40 * (100 + 8)  # the hash key, then payload and tag per frame
    step = 8192 // 16  # a report every pad_block_bits / 16 bytes
    received = call.initiator.key_accounting().received
    assert 8 * (used - step - 108) <= received <= 8 * used
