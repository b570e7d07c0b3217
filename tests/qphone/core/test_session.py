"""Round trips across rotations with loss, reordering and duplication; rejections change nothing."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qphone.core.callparams import CallParams, Mode
from qphone.core.errors import (
    FrameAuthFailed,
    FrameKeyUnavailable,
    FrameMalformed,
    FrameRejected,
    FrameReplayed,
    FrameWrongMode,
    KeyExhausted,
    QphoneError,
)
from qphone.core.events import EpochStarted, PeerBye, RotationOverdue
from tests.support.inmemorycalls import make_call


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
            assert out == payload
            got[i] = out
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


def test_rotation_events_and_accounting_aes() -> None:
    call = make_call(CallParams(rotate_frames=10, rotate_ms=10_000, lookahead=2))
    t = 0.0
    for _ in range(100):
        t += 0.02
        f = call.initiator.protect(b"x" * 50, t)
        call.responder.unprotect(f, t)
        call.pump()
    started = [e for s, e in call.log if s is call.initiator and isinstance(e, EpochStarted)]
    assert call.initiator.send_epoch == 9
    assert [e.epoch for e in started] == list(range(1, 10))
    acc = call.initiator.key_accounting()
    # handshake key + one 256-bit block per epoch, lookahead 2 beyond the current one
    assert acc.handshake == 256 and acc.epoch == 256 * (9 + 2)
    assert acc.consumed == acc.fetched == call.kme.issued_bits
    assert call.responder.key_accounting().epoch == acc.epoch


def test_time_based_rotation() -> None:
    call = make_call(CallParams(rotate_frames=10_000, rotate_ms=1000))
    for i in range(101):
        f = call.initiator.protect(b"x", i * 0.02)
        call.responder.unprotect(f, i * 0.02)
        call.pump()
    assert call.initiator.send_epoch == 2


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
    call.initiator.close()
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
    from qphone.core.sframe import FrameHeader

    for i in range(40):
        f = call.initiator.protect(b"y" * 30, i * 0.02)
        h, _ = FrameHeader.decode(f)
        assert h.ctr not in offsets
        offsets.add(h.ctr)
        call.responder.unprotect(f, i * 0.02)
        call.pump()
    # without key supply the sender refuses instead of reusing pad
    call2 = make_call(params)
    with pytest.raises(KeyExhausted, match="exhausted"):
        for i in range(1000):
            call2.initiator.protect(b"z" * 100, i * 0.02)  # never pumped: no PadReady arrives


def _aes_pair():
    call = make_call(CallParams(rotate_frames=5, grace_ms=100))
    return call, call.initiator, call.responder


def test_rejections_leave_state_unchanged() -> None:
    _, a, b = _aes_pair()
    good = a.protect(b"hello", 0.0)
    tampered = {
        "header": bytes([good[0] ^ 0x01]) + good[1:],
        "ciphertext": good[:2] + bytes([good[2] ^ 1]) + good[3:],
        "tag": good[:-1] + bytes([good[-1] ^ 0x80]),
        "truncated": good[:10],
        "empty": b"",
        "oversized": good + bytes(2000),
    }
    for bad in tampered.values():
        with pytest.raises(FrameRejected):
            b.unprotect(bad, 0.0)
        # the untouched frame still decrypts after every rejection: nothing moved
    assert b.unprotect(good, 0.0) == b"hello"
    with pytest.raises(FrameReplayed):
        b.unprotect(good, 0.0)
    second = a.protect(b"again", 0.0)
    with pytest.raises(FrameAuthFailed):
        b.unprotect(second[:-1] + bytes([second[-1] ^ 1]), 0.0)
    with pytest.raises(FrameMalformed):
        b.unprotect(second[:3], 0.0)
    assert b.unprotect(second, 0.0) == b"again"
    # reflected frame (our own, sent back to us) is refused: per-direction keys
    with pytest.raises(FrameAuthFailed):
        a.unprotect(good, 0.0)


def test_erased_and_future_epochs() -> None:
    call, a, b = _aes_pair()
    old = [a.protect(b"e0-%d" % i, 0.0) for i in range(5)]
    call.pump()
    new = a.protect(b"e1", 0.1)  # 5 frames done: rotate to epoch 1
    assert a.send_epoch == 1
    assert b.unprotect(new, 0.1) == b"e1"
    assert b.unprotect(old[0], 0.15) == b"e0-0"  # inside the 100 ms grace window
    with pytest.raises(FrameKeyUnavailable, match="erased"):
        b.unprotect(old[1], 0.3)  # after the grace window the key is gone
    assert b.unprotect(old[2][:0] + a.protect(b"next", 0.3), 0.3) == b"next"
    # a frame for an epoch that was never announced
    from qphone.core.sframe import FrameHeader

    h, n = FrameHeader.decode(new)
    future = FrameHeader(h.kid + 20, h.ctr).encode() + new[n:]
    with pytest.raises(FrameKeyUnavailable, match="not installed"):
        b.unprotect(future, 0.3)


def test_wrong_mode_frames() -> None:
    aes = make_call(CallParams())
    otp = make_call(CallParams(mode=Mode.OTP, pad_block_bits=8192))
    with pytest.raises(FrameWrongMode):
        otp.responder.unprotect(aes.initiator.protect(b"a", 0.0), 0.0)
    with pytest.raises(FrameWrongMode):
        aes.responder.unprotect(otp.initiator.protect(b"a", 0.0), 0.0)


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
    assert b.unprotect(good, 0.0) == b"secret voice"
    with pytest.raises(FrameReplayed):
        b.unprotect(good, 0.0)


def test_rotation_waits_for_peer_without_losing_frames() -> None:
    """If the responder has not confirmed the next epoch, the sender stays on the current one
    (for at most max_overdue_epochs more epochs: tests/qphone/core/test_rotation_limit.py)."""
    _, a, b = _aes_pair()
    # lookahead 2: epochs 1 and 2 are ready; without control traffic epoch 3 never is
    frames = [a.protect(b"%d" % i, i * 0.02) for i in range(25)]
    assert a.send_epoch == 2
    assert any(isinstance(e, RotationOverdue) and e.epoch == 2 for e in a.events())
    assert [b.unprotect(f, 0.7) for f in frames] == [b"%d" % i for i in range(25)]


def test_counter_exhaustion_refused() -> None:
    from qphone.core.session import CallSession
    from qphone.demo.inmemorycall import MemoryKmePair, handshake
    from tests.support.inmemorycalls import ALICE, BOB

    kme = MemoryKmePair()
    ini, _ = handshake(ALICE, BOB, CallParams(rotate_frames=1000), kme)
    s = CallSession(ini, max_counter=3)
    for _ in range(4):
        s.protect(b"x", 0.0)
    with pytest.raises(KeyExhausted, match="counter exhausted"):
        s.protect(b"x", 0.0)


def test_bye_closes_and_erases() -> None:
    _, a, b = _aes_pair()
    bye = a.bye("done")
    assert a.closed
    b.receive_control(bye)
    assert b.closed
    assert PeerBye("done", failed=False) in b.events()
    with pytest.raises(QphoneError, match="closed"):
        b.protect(b"x", 0.0)


def test_failing_bye_says_so() -> None:
    _, a, b = _aes_pair()
    b.receive_control(a.bye("QKD key supply failed", failed=True))
    assert PeerBye("QKD key supply failed", failed=True) in b.events()


def test_key_accounting_is_a_snapshot() -> None:
    call = make_call(CallParams(mode=Mode.OTP, pad_block_bits=8192))
    before = call.initiator.key_accounting()
    call.responder.unprotect(call.initiator.protect(bytes(40), 0.0), 0.0)
    after = call.initiator.key_accounting()
    assert after.pad == before.pad + 8 * 40  # the earlier copy did not move with the session
    before.pad = 0  # and writing to a copy changes nothing in the session
    assert call.initiator.key_accounting().pad == after.pad
