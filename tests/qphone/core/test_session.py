"""The interface both modes share: round trips across rotations with loss, reordering and
duplication, the factory's choice by mode, the opened frame, refusals after close."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qphone.core.aessession import AesSession
from qphone.core.callparams import CallParams, Mode
from qphone.core.errors import FrameReplayed, FrameWrongMode, QphoneError
from qphone.core.openedframe import OpenedFrame
from qphone.core.otpsession import OtpSession
from qphone.core.session import new_session
from qphone.demo.inmemorycall import MemoryKmePair, handshake
from tests.support.inmemorycalls import ALICE, BOB, make_call


def _stream(call, mode_frames: int, seed: int, loss: float, dup: float, reorder: int):
    """Send ``mode_frames`` frames each way, 20 ms apart; deliver with impairments.

    Returns, per direction, the list of (sent index, delivered payload or exception)."""
    rng = random.Random(seed)
    results = []
    for sender in (call.initiator, call.responder):
        receiver = call.peer(sender)
        sent: list[tuple[int, bytes, bytes]] = []
        t = 0.0
        for i in range(mode_frames):
            t += 0.02
            payload = rng.randbytes(rng.randint(1, 120))
            sent.append((i, payload, sender.protect(payload, t)))
            call.pump()
        # network: drop, duplicate, then locally shuffle within `reorder` positions
        wire = [s for s in sent if rng.random() >= loss]
        wire += [s for s in wire if rng.random() < dup]
        wire.sort(key=lambda s: s[0] + rng.uniform(0, reorder))
        got: dict[int, bytes] = {}
        rejected = []
        t2 = 0.0
        for i, payload, frame in wire:
            t2 = max(t2, (i + 1) * 0.02 + 0.01)
            try:
                out = receiver.unprotect(frame, t2)
            except FrameReplayed:
                rejected.append(i)
                continue
            assert i not in got, "a duplicate was accepted"
            assert out == OpenedFrame(payload, i)  # each side numbers its frames from 0
            got[i] = out.payload
            call.pump()
        results.append((sent, wire, got, rejected))
    return results


@settings(max_examples=12, deadline=None)
@given(
    mode=st.sampled_from([Mode.AES, Mode.OTP]),
    seed=st.integers(0, 2**32),
    loss=st.sampled_from([0.0, 0.1, 0.3]),
    dup=st.sampled_from([0.0, 0.05]),
    reorder=st.sampled_from([0, 3, 20]),
)
def test_round_trip_with_impairments(mode, seed, loss, dup, reorder) -> None:
    params = CallParams(mode=mode, rotate_frames=40, pad_block_bits=8192, grace_ms=2000)
    call = make_call(params)
    for _sent, wire, got, rejected in _stream(call, 400, seed, loss, dup, reorder):
        delivered = {i for i, _, _ in wire}
        # every frame that arrived decrypts exactly once; duplicates are the only rejections
        assert set(got) == delivered
        assert len(rejected) == len(wire) - len(delivered)
    if mode is Mode.AES:
        assert call.initiator.send_epoch >= 9 and call.responder.send_epoch >= 9


@pytest.mark.parametrize("mode", list(Mode))
def test_the_factory_makes_the_session_of_the_mode(mode: Mode) -> None:
    kind = {Mode.AES: AesSession, Mode.OTP: OtpSession}[mode]
    other = {Mode.AES: OtpSession, Mode.OTP: AesSession}[mode]
    ini, res = handshake(ALICE, BOB, CallParams(mode=mode, pad_block_bits=8192), MemoryKmePair())
    for result in (ini, res):
        session = new_session(result)
        assert isinstance(session, kind) and session.mode is mode
        assert session.role is result.role and session.sas == result.sas
        session.close()
    # a mode's session refuses the other mode's handshake result
    c, _ = handshake(ALICE, BOB, CallParams(mode=mode, pad_block_bits=8192), MemoryKmePair())
    with pytest.raises(ValueError, match="session for a"):
        other(c)


def test_the_opened_frame_is_frozen() -> None:
    call = make_call(CallParams())
    opened = call.responder.unprotect(call.initiator.protect(b"hi", 0.0), 0.0)
    assert opened == OpenedFrame(b"hi", 0)
    with pytest.raises(AttributeError):
        opened.frame_number = 7  # type: ignore[misc]


def test_wrong_mode_frames() -> None:
    aes = make_call(CallParams())
    otp = make_call(CallParams(mode=Mode.OTP, pad_block_bits=8192))
    with pytest.raises(FrameWrongMode):
        otp.responder.unprotect(aes.initiator.protect(b"a", 0.0), 0.0)
    with pytest.raises(FrameWrongMode):
        aes.responder.unprotect(otp.initiator.protect(b"a", 0.0), 0.0)


@pytest.mark.parametrize("mode", list(Mode))
def test_a_closed_session_protects_and_opens_nothing(mode: Mode) -> None:
    call = make_call(CallParams(mode=mode, pad_block_bits=8192))
    a, b = call.initiator, call.responder
    frame = a.protect(b"before", 0.0)
    b.close()
    b.close()  # idempotent
    assert b.closed
    with pytest.raises(QphoneError, match="closed"):
        b.unprotect(frame, 0.0)  # a frame it would have taken: its keys are gone
    with pytest.raises(QphoneError, match="closed"):
        b.protect(b"after", 0.0)
    assert b.start() == []  # it asks for no key any more
    for use in (lambda: b.key_latency(1.0), lambda: b.bye(), lambda: b.receive_control(b"")):
        with pytest.raises(QphoneError, match="closed"):
            use()
