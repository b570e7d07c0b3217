"""Control channel messages: authenticated, in sequence, strictly parsed."""

from __future__ import annotations

import hmac
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qphone.core.control import (
    Bye,
    ControlChannel,
    EpochAnnounce,
    EpochReady,
    PadAnnounce,
    PadReady,
    SenderProgress,
)
from qphone.core.errors import ControlRejected
from qphone.core.keyschedule import Direction

K1, K2 = b"1" * 32, b"2" * 32
MESSAGES = [
    EpochAnnounce(7, (uuid.uuid4(),)),
    EpochReady(7),
    PadAnnounce(Direction.R2I, 8192, (uuid.uuid4(), uuid.uuid4())),
    PadReady(Direction.I2R, 16384),
    SenderProgress(3, 1000),
    Bye("hang up ☎"),
    Bye("KME unreachable", failed=True),
]


def test_round_trip_in_sequence() -> None:
    a, b = ControlChannel(K1, K2), ControlChannel(K2, K1)
    for msg in MESSAGES:
        assert b.open(a.seal(msg)) == msg


def test_replay_reorder_tamper_rejected_without_state_change() -> None:
    a, b = ControlChannel(K1, K2), ControlChannel(K2, K1)
    m0, m1 = a.seal(MESSAGES[0]), a.seal(MESSAGES[1])
    with pytest.raises(ControlRejected, match="sequence"):
        b.open(m1)
    with pytest.raises(ControlRejected, match="authentication"):
        b.open(m0[:-1] + bytes([m0[-1] ^ 1]))
    with pytest.raises(ControlRejected, match="authentication"):
        b.open(bytes([m0[0] ^ 1]) + m0[1:])
    with pytest.raises(ControlRejected, match="out of bounds"):
        b.open(b"")
    assert b.open(m0) == MESSAGES[0]
    with pytest.raises(ControlRejected, match="sequence"):
        b.open(m0)
    assert b.open(m1) == MESSAGES[1]
    # a message sealed for the other direction (reflection) fails
    with pytest.raises(ControlRejected):
        a.open(m0)


@given(st.binary(max_size=300))
def test_garbage_never_crashes(data: bytes) -> None:
    b = ControlChannel(K2, K1)
    with pytest.raises(ControlRejected):
        b.open(data)


def test_bye_failed_flag_is_strict() -> None:
    body = bytearray(ControlChannel(K1, K2).seal(Bye("x", failed=True))[:-16])
    body[5] = 2  # the flag byte after type and seq: neither 0 nor 1
    forged = bytes(body) + hmac.new(K1, bytes(body), "sha256").digest()[:16]
    with pytest.raises(ControlRejected, match="failed flag"):
        ControlChannel(K2, K1).open(forged)
