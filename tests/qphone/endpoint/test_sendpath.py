"""The send path's pad watch: the OTP talk time left, and one warning per low spell."""

from __future__ import annotations

import math

from qphone.core.callparams import CallParams, Mode
from qphone.endpoint.sendpath import PAD_WARN_S, PadWatch, talk_seconds_left
from qphone.endpoint.state import CallCounters
from tests.support.inmemorycalls import make_call


def test_otp_warns_once_before_the_pad_runs_out() -> None:
    call = make_call(CallParams(mode=Mode.OTP, pad_block_bits=8192, lookahead=1))
    counters = CallCounters(frames_sent=100, payload_bytes_sent=15000)  # 150 B/frame
    left = talk_seconds_left(call.initiator, counters, 20)
    assert left == call.initiator.pad_left_bytes / ((150 + 8) * 50) < PAD_WARN_S
    warnings: list[str] = []
    watch = PadWatch(warnings.append, 20)
    watch.check(call.initiator, counters)  # 1 KiB of pad = 0.13 s of talk at 150+8 B/frame
    watch.check(call.initiator, counters)
    assert len(warnings) == 1 and "one-time pad for only" in warnings[0]


def test_aes_has_no_talk_time_limit() -> None:
    call = make_call(CallParams(mode=Mode.AES))
    assert math.isinf(talk_seconds_left(call.initiator, CallCounters(), 20))
    warnings: list[str] = []
    PadWatch(warnings.append, 20).check(call.initiator, CallCounters())
    assert warnings == []
