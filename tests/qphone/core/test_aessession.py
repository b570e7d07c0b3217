"""AES mode: epoch rotation, its accounting, rejections that change nothing, the grace window,
rotation that waits for the peer, and a counter that would repeat."""

from __future__ import annotations

import pytest

from qphone.core.aessession import AesSession
from qphone.core.callparams import CallParams
from qphone.core.errors import (
    FrameAuthFailed,
    FrameKeyUnavailable,
    FrameMalformed,
    FrameRejected,
    FrameReplayed,
    KeyExhausted,
)
from qphone.core.events import EpochStarted, RotationOverdue
from qphone.core.sframe import FrameHeader
from qphone.demo.inmemorycall import MemoryKmePair, handshake
from tests.support.inmemorycalls import ALICE, BOB, make_call


def test_rotation_events_and_accounting() -> None:
    call = make_call(CallParams(rotate_frames=10, rotate_ms=10_000, lookahead=2))
    t = 0.0
    for _ in range(100):
        t += 0.02
        f = call.initiator.protect(b"x" * 50, t)
        call.responder.unprotect(f, t)
        call.pump()
    started = [e for s, e in call.log if s is call.initiator and isinstance(e, EpochStarted)]
    assert call.initiator.send_epoch == 9
    assert call.responder.recv_epoch == 9
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
    assert b.unprotect(good, 0.0).payload == b"hello"
    with pytest.raises(FrameReplayed):
        b.unprotect(good, 0.0)
    second = a.protect(b"again", 0.0)
    with pytest.raises(FrameAuthFailed):
        b.unprotect(second[:-1] + bytes([second[-1] ^ 1]), 0.0)
    with pytest.raises(FrameMalformed):
        b.unprotect(second[:3], 0.0)
    assert b.unprotect(second, 0.0).payload == b"again"
    # reflected frame (our own, sent back to us) is refused: per-direction keys
    with pytest.raises(FrameAuthFailed):
        a.unprotect(good, 0.0)


def test_erased_and_future_epochs() -> None:
    call, a, b = _aes_pair()
    old = [a.protect(b"e0-%d" % i, 0.0) for i in range(5)]
    call.pump()
    new = a.protect(b"e1", 0.1)  # 5 frames done: rotate to epoch 1
    assert a.send_epoch == 1
    assert b.unprotect(new, 0.1).payload == b"e1"
    assert b.unprotect(old[0], 0.15).payload == b"e0-0"  # inside the 100 ms grace window
    with pytest.raises(FrameKeyUnavailable, match="erased"):
        b.unprotect(old[1], 0.3)  # after the grace window the key is gone
    assert b.unprotect(a.protect(b"next", 0.3), 0.3).payload == b"next"
    # a frame for an epoch that was never announced
    h, n = FrameHeader.decode(new)
    future = FrameHeader(h.kid + 20, h.ctr).encode() + new[n:]
    with pytest.raises(FrameKeyUnavailable, match="not installed"):
        b.unprotect(future, 0.3)


def test_rotation_waits_for_peer_without_losing_frames() -> None:
    """If the responder has not confirmed the next epoch, the sender stays on the current one
    (for at most max_overdue_epochs more epochs: tests/qphone/core/test_rotation_limit.py)."""
    _, a, b = _aes_pair()
    # lookahead 2: epochs 1 and 2 are ready; without control traffic epoch 3 never is
    frames = [a.protect(b"%d" % i, i * 0.02) for i in range(25)]
    assert a.send_epoch == 2
    assert any(isinstance(e, RotationOverdue) and e.epoch == 2 for e in a.events())
    opened = [b.unprotect(f, 0.7) for f in frames]
    assert [o.payload for o in opened] == [b"%d" % i for i in range(25)]
    assert [o.frame_number for o in opened] == list(range(25))  # the CTR runs across epochs


def test_counter_exhaustion_refused() -> None:
    ini, _ = handshake(ALICE, BOB, CallParams(rotate_frames=1000), MemoryKmePair())
    s = AesSession(ini, max_counter=3)
    for _ in range(4):
        s.protect(b"x", 0.0)
    with pytest.raises(KeyExhausted, match="counter exhausted"):
        s.protect(b"x", 0.0)


def test_the_overdue_limit_is_checked() -> None:
    ini, _ = handshake(ALICE, BOB, CallParams(), MemoryKmePair())
    with pytest.raises(ValueError, match="max_overdue_epochs"):
        AesSession(ini, max_overdue_epochs=0)
    assert not ini.secrets.erased  # refused before it took the secrets
