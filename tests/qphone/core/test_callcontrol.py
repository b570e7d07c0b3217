"""What both modes share: bye and close erase, an authentic invalid control message closes the
session, a forged one changes nothing, keys handed in are checked before anything moves, the
accounting is a snapshot."""

from __future__ import annotations

import uuid

import pytest

from qphone.core.callparams import CallParams, Mode
from qphone.core.control import ControlChannel, EpochReady, PadReady
from qphone.core.errors import ControlRejected, ControlUnauthenticated, QphoneError
from qphone.core.events import KeyPurpose, PeerBye
from qphone.core.keyschedule import Direction
from qphone.core.qkd import QkdKey
from qphone.core.session import new_session
from qphone.demo.inmemorycall import MemoryKmePair, handshake
from tests.support.inmemorycalls import ALICE, BOB, make_call


def test_bye_closes_and_erases() -> None:
    call = make_call(CallParams())
    a, b = call.initiator, call.responder
    bye = a.bye("done")
    assert a.closed
    b.receive_control(bye)
    assert b.closed
    assert PeerBye("done", failed=False) in b.events()
    with pytest.raises(QphoneError, match="closed"):
        b.protect(b"x", 0.0)


def test_failing_bye_says_so() -> None:
    call = make_call(CallParams(mode=Mode.OTP, pad_block_bits=8192))
    call.responder.receive_control(call.initiator.bye("QKD key supply failed", failed=True))
    assert PeerBye("QKD key supply failed", failed=True) in call.responder.events()


@pytest.mark.parametrize(
    ("mode", "invalid"),
    [(Mode.AES, EpochReady(99)), (Mode.OTP, PadReady(Direction.R2I, 1))],
)
def test_an_authentic_invalid_message_closes_a_forged_one_changes_nothing(mode, invalid) -> None:
    ini, res = handshake(ALICE, BOB, CallParams(mode=mode, pad_block_bits=8192), MemoryKmePair())
    # the responder's control channel, from copies of its keys (the session takes the originals)
    peer = ControlChannel(bytes(res.secrets.control_r2i), bytes(res.secrets.control_i2r))
    forger = ControlChannel(bytes(32), bytes(32))
    session = new_session(ini)
    with pytest.raises(ControlUnauthenticated):
        session.receive_control(forger.seal(invalid))
    assert not session.closed
    with pytest.raises(ControlRejected, match="never announced"):
        session.receive_control(peer.seal(invalid))
    assert session.closed and ini.secrets.erased  # fail closed: every key erased


@pytest.mark.parametrize("mode", list(Mode))
def test_keys_handed_in_are_checked_before_anything_moves(mode: Mode) -> None:
    call = make_call(CallParams(mode=mode, pad_block_bits=8192))
    a, b = call.initiator, call.responder
    before = a.key_accounting(), b.key_accounting()
    other = KeyPurpose.PAD_I2R if mode is Mode.AES else KeyPurpose.EPOCH
    mine = KeyPurpose.EPOCH if mode is Mode.AES else KeyPurpose.PAD_I2R
    with pytest.raises(QphoneError, match=f"do not belong to a {mode.label} call"):
        a.provide_qkd_keys(other, [QkdKey(uuid.uuid4(), bytes(32))])
    with pytest.raises(ValueError, match="bits, need"):
        a.provide_qkd_keys(mine, [QkdKey(uuid.uuid4(), bytes(3))])
    with pytest.raises(QphoneError, match="no QKD keys are awaited"):
        b.provide_qkd_keys(mine, [QkdKey(uuid.uuid4(), bytes(32))])
    assert (a.key_accounting(), b.key_accounting()) == before
    assert a.events() == [] and b.events() == []


def test_key_accounting_is_a_snapshot() -> None:
    call = make_call(CallParams(mode=Mode.OTP, pad_block_bits=8192))
    before = call.initiator.key_accounting()
    call.responder.unprotect(call.initiator.protect(bytes(40), 0.0), 0.0)
    after = call.initiator.key_accounting()
    assert after.pad == before.pad + 8 * 40  # the earlier copy did not move with the session
    before.pad = 0  # and writing to a copy changes nothing in the session
    assert call.initiator.key_accounting().pad == after.pad
