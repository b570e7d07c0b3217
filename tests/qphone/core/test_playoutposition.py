"""Playout position from the authenticated frame number; RTP fields only checked against it."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qphone.core.callparams import CallParams, Mode
from qphone.core.errors import FrameAuthFailed, KeyExhausted
from qphone.core.otp import PadSender, otp_header
from qphone.core.playoutposition import Placement, PlayoutPosition, PositionMismatch
from qphone.core.sframe import parse_header
from tests.support.inmemorycalls import make_call

TICKS = 960


def honest_stream(rng: random.Random, frames: int, no_packet: float) -> list[tuple[int, int, int]]:
    """(frame number, RTP seq, RTP ts) as the sender produces them: one number per slot, a
    packet for most of them (a frame dropped before the network gets no sequence number)."""
    seq0, ts0 = rng.randrange(1 << 16), rng.randrange(1 << 32)
    out, seq = [], seq0
    for n in range(frames):
        if rng.random() < no_packet:
            continue
        out.append((n, seq % (1 << 16), (ts0 + TICKS * n) % (1 << 32)))
        seq += 1
    return out


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    no_packet=st.sampled_from([0.0, 0.02, 0.2]),
    loss=st.sampled_from([0.0, 0.1, 0.4]),
    reorder=st.sampled_from([0, 3, 40]),
)
def test_an_honest_stream_is_never_refused_and_plays_by_frame_number(
    seed: int, no_packet: float, loss: float, reorder: int
) -> None:
    rng = random.Random(seed)
    stream = [f for f in honest_stream(rng, 3000, no_packet) if rng.random() >= loss]
    # bounded reordering on the network
    keyed = sorted(stream, key=lambda f: f[0] + rng.uniform(0, reorder))
    position = PlayoutPosition(TICKS)
    placed = {n: position.place(n, seq, ts) for n, seq, ts in keyed}
    assert set(placed) == {f[0] for f in stream}
    first_n, _, first_ts = keyed[0]
    for n, p in placed.items():
        assert p == Placement(n % (1 << 16), (first_ts + TICKS * (n - first_n)) % (1 << 32))


def test_rewritten_rtp_fields_are_refused_without_a_state_change() -> None:
    rng = random.Random(5)
    stream = honest_stream(rng, 200, 0.0)
    position = PlayoutPosition(TICKS)
    for n, seq, ts in stream[:100]:
        position.place(n, seq, ts)
    n, seq, ts = stream[150]
    attacks = {
        "timestamp of another slot": (n, seq, (ts - TICKS * 50) % (1 << 32)),
        "sequence number of an earlier slot": (n, (seq - 120) % (1 << 16), ts),
        "RTP fields closing the gap": (
            n,
            (stream[99][1] + 1) % (1 << 16),
            (stream[99][2] + TICKS) % (1 << 32),
        ),
        "already placed": (stream[50][0], stream[50][1], stream[50][2]),
    }
    for what, (an, aseq, ats) in attacks.items():
        with pytest.raises(PositionMismatch):
            position.place(an, aseq, ats)
            pytest.fail(what)
    # nothing changed: the honest frames still fit
    for n, seq, ts in stream[100:]:
        position.place(n, seq, ts)


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    victim=st.integers(1, 198),
    new_seq=st.integers(0, (1 << 16) - 1),
    new_ts=st.integers(0, (1 << 32) - 1),
    new_n=st.integers(0, 400),
)
def test_no_rewrite_moves_a_frame(
    seed: int, victim: int, new_seq: int, new_ts: int, new_n: int
) -> None:
    """Whatever RTP fields (and whichever authentic frame) an attacker sends, a frame is either
    refused or placed exactly at its own frame number: it never plays anywhere else."""
    rng = random.Random(seed)
    stream = honest_stream(rng, 200, 0.05)
    position = PlayoutPosition(TICKS)
    kept = [f for f in stream if rng.random() < 0.7]
    for n, seq, ts in kept:
        position.place(n, seq, ts)
    ts0 = (stream[0][2] - TICKS * stream[0][0]) % (1 << 32)
    try:
        p = position.place(new_n, new_seq, new_ts)
    except PositionMismatch:
        return
    assert p == Placement(new_n % (1 << 16), (ts0 + TICKS * new_n) % (1 << 32))


def test_bounds() -> None:
    with pytest.raises(ValueError):
        PlayoutPosition(0)
    position = PlayoutPosition(TICKS)
    for bad in ((-1, 0, 0), (0, 1 << 16, 0), (0, 0, 1 << 32)):
        with pytest.raises(PositionMismatch):
            position.place(*bad)


def test_aes_frame_counter_runs_on_across_epochs() -> None:
    call = make_call(CallParams(rotate_frames=10, rotate_ms=10_000, lookahead=2))
    counters, epochs = [], []
    for i in range(60):
        frame = call.initiator.protect(b"x" * 20, i * 0.02)
        kid, ctr, _ = parse_header(frame)
        counters.append(ctr)
        epochs.append(kid >> 1)
        assert call.responder.unprotect(frame, i * 0.02).frame_number == ctr
        call.pump()
    assert counters == list(range(60))
    assert epochs[-1] >= 4 and epochs == sorted(epochs)


def test_otp_frame_number_is_authenticated_and_spent_per_slot() -> None:
    call = make_call(CallParams(mode=Mode.OTP, pad_block_bits=8192))
    numbers = []
    for i in range(30):
        frame = call.initiator.protect(b"y" * 40, i * 0.02)
        kid, offset, hlen = parse_header(frame)
        numbers.append(kid >> 1)
        assert kid & 1 == 1
        # another frame number in the header: the MAC fails
        forged = otp_header((kid >> 1) + 5, offset) + frame[hlen:]
        with pytest.raises(FrameAuthFailed):
            call.responder.unprotect(forged, i * 0.02)
        assert call.responder.unprotect(frame, i * 0.02).frame_number == kid >> 1
        call.pump()
    assert numbers == list(range(30))
    # a slot without pad still spends its frame number
    sender = PadSender(64)
    with pytest.raises(KeyExhausted):
        sender.protect(b"z")
    assert sender.frame_number == 1
