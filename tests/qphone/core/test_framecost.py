"""The per-frame path stays short: counted, not timed (``qphone bench crypto`` times it).

Counting the Python functions a frame runs through, and the memory it allocates, catches what
made the OTP path 1.6x libsrtp's cost: bookkeeping that crept into every frame (a pad-demand
sample per frame, the stream position recomputed through chains of properties, the pad copied
twice), and would catch a copy of the pad stream per frame."""

from __future__ import annotations

import sys
import tracemalloc
from collections import Counter
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest

from qphone.core.callparams import CallParams, Mode
from qphone.core.identity import Identity
from qphone.core.session import CallSession
from qphone.demo.inmemorycall import InMemoryCall, MemoryKmePair, handshake

FRAMES = 200
PAYLOAD = bytes(80)
# Python-level functions entered per frame, protect and unprotect together, at most.  OTP: the
# session's protect and unprotect, the pad streams' protect and unprotect, the MAC's seal_at and
# open_at, the header parser, the opened frame's maker: 8, plus a pad-demand sample every 100 ms
# on the caller's side.  AES: the session's protect and unprotect, the sender's protect and the
# receiver's unprotect and what they call, the opened frame's maker (measured: 7.4).
MAX_CALLS_PER_FRAME = {Mode.OTP: 9.5, Mode.AES: 8.0}  # (before the fix: OTP 17-18)
MAX_BYTES_PER_FRAME = 2048  # allocated and kept at the peak, per frame (the pad stream is 1 MiB)


def _sessions(mode: Mode) -> tuple[CallSession, CallSession]:
    params = CallParams(mode=mode, pad_block_bits=1 << 20, lookahead=8)
    kme = MemoryKmePair()
    ini, res = handshake(Identity.generate(), Identity.generate(), params, kme)
    call = InMemoryCall(ini, res, kme, pad_lookahead_s=0.5)  # as the endpoints hold it
    call.pump()
    return call.initiator, call.responder


def _run(sender: CallSession, receiver: CallSession, start: float) -> Callable[[], list[bytes]]:
    def run() -> list[bytes]:
        out = []
        for i in range(FRAMES):
            now = start + 0.02 * i
            out.append(receiver.unprotect(sender.protect(PAYLOAD, now), now).payload)
        return out

    return run


def _count_calls(run: Callable[[], list[bytes]]) -> tuple[Counter[str], list[bytes]]:
    calls: Counter[str] = Counter()

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            calls[frame.f_code.co_qualname] += 1

    sys.setprofile(profile)
    try:
        out = run()
    finally:
        sys.setprofile(None)
    return calls, out


@pytest.mark.parametrize("mode", [Mode.OTP, Mode.AES])
def test_per_frame_path_runs_few_python_functions(mode: Mode) -> None:
    a, b = _sessions(mode)
    _run(a, b, 1.0)()  # warm: first frames draw the hash key, start rates
    _run(b, a, 1.0)()
    for sender, receiver in ((a, b), (b, a)):  # both directions: both roles' paths
        calls, out = _count_calls(_run(sender, receiver, 10.0))
        assert out == [PAYLOAD] * FRAMES
        per_frame = sum(calls.values()) / FRAMES
        assert per_frame <= MAX_CALLS_PER_FRAME[mode], calls.most_common(12)


def test_otp_frames_allocate_no_copy_of_the_pad_stream() -> None:
    a, b = _sessions(Mode.OTP)
    _run(a, b, 1.0)()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        out = _run(a, b, 10.0)()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert len(out) == FRAMES
    # the payloads kept in ``out`` are most of it; a copy of the 1 MiB stream per frame (or
    # the stream re-joined) would show as megabytes
    assert peak <= FRAMES * MAX_BYTES_PER_FRAME // 4 + 64 * 1024, peak
