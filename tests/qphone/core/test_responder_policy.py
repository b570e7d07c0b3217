"""The responder's policy: safe defaults, every rule refusing with the setting it names."""

from __future__ import annotations

import os
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qphone.core.callparams import TAG_BITS, CallParams, Mode
from qphone.core.errors import ProposalRefused
from qphone.core.handshake import Initiator, Responder, ResponderPolicy
from qphone.core.identity import Identity
from qphone.core.qkd import QkdKey

ALICE, BOB = Identity.generate(), Identity.generate()


@pytest.mark.parametrize(
    ("params", "setting"),
    [
        (CallParams(mode=Mode.OTP, otp_tag_bits=32), "min_otp_tag_bits"),
        (CallParams(rotate_ms=120_000, rotate_frames=10_000), "max_epoch_seconds"),
        (CallParams(rotate_ms=86_400_000, rotate_frames=1 << 20), "max_epoch_seconds"),
        (CallParams(rotate_ms=10_000, rotate_frames=5000), "max_epoch_frames"),
        (CallParams(pqc_only=True, handshake_qkd_bits=0), "allow_pqc_only"),
    ],
)
def test_the_defaults_refuse_weak_proposals_naming_the_setting(
    params: CallParams, setting: str
) -> None:
    keys = [] if params.pqc_only else [QkdKey(uuid.uuid4(), os.urandom(32))]
    res = Responder(BOB, b"B" * 32)
    with pytest.raises(ProposalRefused) as refused:
        res.receive(Initiator(ALICE, params, keys, b"B" * 32).start())
    assert refused.value.setting == setting
    assert res.closed


def test_the_defaults_accept_what_qphone_proposes_by_default() -> None:
    policy = ResponderPolicy()
    for params in (
        CallParams(),  # qphone call: 500 frames or 10 s
        CallParams(mode=Mode.OTP),  # 64-bit tags
        CallParams(rotate_frames=250, rotate_ms=3_600_000),  # qphone loopback: 250 frames
        CallParams(mode=Mode.OTP, otp_tag_bits=128),
        CallParams(rotate_frames=3000, rotate_ms=60_000),
    ):
        policy.check(params)


def test_a_policy_can_be_loosened_and_tightened() -> None:
    loose = ResponderPolicy(min_otp_tag_bits=32, max_epoch_ms=86_400_000, max_epoch_frames=1 << 31)
    loose.check(CallParams(mode=Mode.OTP, otp_tag_bits=32))
    loose.check(CallParams(rotate_ms=86_400_000, rotate_frames=1 << 31))
    tight = ResponderPolicy(min_otp_tag_bits=128, max_epoch_ms=2000, max_epoch_frames=100)
    for params, setting in (
        (CallParams(mode=Mode.OTP), "min_otp_tag_bits"),
        (CallParams(), "max_epoch_seconds"),
        (CallParams(rotate_ms=1000, rotate_frames=101), "max_epoch_frames"),
    ):
        with pytest.raises(ProposalRefused) as refused:
            tight.check(params)
        assert refused.value.setting == setting


@given(
    tag=st.sampled_from(TAG_BITS),
    minimum=st.sampled_from(TAG_BITS),
    rotate_ms=st.integers(20, 86_400_000),
    rotate_frames=st.integers(1, 1 << 31),
    max_ms=st.integers(20, 86_400_000),
    max_frames=st.integers(1, 1 << 31),
)
def test_accepted_means_within_every_limit(
    tag: int, minimum: int, rotate_ms: int, rotate_frames: int, max_ms: int, max_frames: int
) -> None:
    policy = ResponderPolicy(
        min_otp_tag_bits=minimum, max_epoch_ms=max_ms, max_epoch_frames=max_frames
    )
    otp = CallParams(mode=Mode.OTP, otp_tag_bits=tag)
    aes = CallParams(rotate_ms=rotate_ms, rotate_frames=rotate_frames)
    for params in (otp, aes):
        try:
            policy.check(params)
        except ProposalRefused:
            continue
        if params.mode is Mode.OTP:
            assert params.otp_tag_bits >= minimum
        else:
            assert min(params.rotate_ms, 60 * params.rotate_frames) <= max_ms
            assert params.rotate_frames <= max_frames
