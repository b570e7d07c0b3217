"""The receive path plays frames by their authenticated position (both modes).

An attacker who controls the media path (RTP sequence numbers and timestamps, or the data
channel's header) holds authentic frames and sends them again with rewritten RTP fields, within
the replay window: a cut-and-paste of a phrase, or a cut whose gap it closes. The frames go
through the real session, receive path and jitter buffer; what comes out of the jitter buffer
must be in authenticated order, each frame in its own slot.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from qphone.audio.opus import OpusConfig
from qphone.core.callparams import CallParams, Mode
from qphone.core.jitterbuffer import PlayoutKind
from qphone.endpoint.playout import Playout
from qphone.endpoint.receivepath import ReceivePath
from qphone.endpoint.state import CallCounters
from qphone.transport.frames import ReceivedFrame
from tests.support.inmemorycalls import make_call

TICKS = 960
FRAME_S = 0.02
SEQ0, TS0 = 65_500, 4_294_000_000  # both wrap during the call


@dataclass(frozen=True)
class Sent:
    index: int
    frame: bytes

    @property
    def seq(self) -> int:
        return (SEQ0 + self.index) % (1 << 16)

    @property
    def ts(self) -> int:
        return (TS0 + TICKS * self.index) % (1 << 32)


def word(i: int) -> bytes:
    return b"word %03d " % i + bytes(i % 7)


def send(mode: Mode, count: int) -> tuple[list[Sent], ReceivePath, Playout, CallCounters]:
    call = make_call(CallParams(mode=mode, pad_block_bits=65_536, rotate_frames=25))
    sent = []
    for i in range(count):
        sent.append(Sent(i, call.initiator.protect(word(i), i * FRAME_S)))
        call.pump()
    playout = Playout(OpusConfig())
    counters = CallCounters()
    path = ReceivePath(call.responder, playout, counters, drain_events=call.pump)
    return sent, path, playout, counters


def deliver(
    path: ReceivePath, playout: Playout, wire: list[tuple[float, Sent, int, int]]
) -> list[tuple[int, int]]:
    """Deliver (arrival, frame, seq, ts) in order while playing out; return the (slot
    timestamp, index) of every frame played normally."""
    played: list[tuple[int, int]] = []

    def play_until(t: float) -> None:
        for item in playout.jb.pop_all(t):
            if item.kind is PlayoutKind.NORMAL:
                assert item.payload is not None
                played.append((item.timestamp, int(item.payload[5:8])))

    for arrival, sent, seq, ts in wire:
        play_until(arrival)
        path.on_frame(ReceivedFrame(sent.frame, seq, ts, arrival))
    play_until(wire[-1][0] + 1.0)
    return played


def assert_in_authenticated_order(played: list[tuple[int, int]]) -> None:
    indices = [i for _, i in played]
    assert indices == sorted(indices), f"played out of order: {indices}"
    for slot, i in played:
        assert slot == (TS0 + TICKS * i) % (1 << 32), f"frame {i} played in another slot"


@pytest.mark.parametrize("mode", [Mode.AES, Mode.OTP])
def test_a_phrase_cut_and_pasted_within_the_replay_window_is_never_played(mode: Mode) -> None:
    """Hold phrase A (frames 20..29), let 30..59 through, then send A again dressed as frames
    60..69 (their sequence numbers and timestamps) instead of the real 60..69."""
    sent, path, playout, counters = send(mode, 100)
    wire = []
    for s in sent:
        t = s.index * FRAME_S + 0.005
        if 20 <= s.index < 30:
            continue  # held back
        if 60 <= s.index < 70:
            pasted = sent[s.index - 40]
            wire.append((t, pasted, s.seq, s.ts))  # A in B's place
            continue
        wire.append((t, s, s.seq, s.ts))
    played = deliver(path, playout, wire)
    assert_in_authenticated_order(played)
    assert not {i for _, i in played} & set(range(20, 30))
    assert counters.misplaced == 10
    assert counters.frames_received == 80


@pytest.mark.parametrize("mode", [Mode.AES, Mode.OTP])
def test_a_cut_whose_gap_is_closed_by_rewriting_rtp_is_refused(mode: Mode) -> None:
    """Drop frames 40..49 and move everything after them ten slots earlier."""
    sent, path, playout, counters = send(mode, 100)
    wire = []
    for s in sent:
        if s.index < 40:
            wire.append((s.index * FRAME_S + 0.005, s, s.seq, s.ts))
        elif s.index >= 50:
            earlier = sent[s.index - 10]
            wire.append((earlier.index * FRAME_S + 0.005, s, earlier.seq, earlier.ts))
    played = deliver(path, playout, wire)
    assert_in_authenticated_order(played)
    assert [i for _, i in played] == list(range(40))
    assert counters.misplaced == 50


@pytest.mark.parametrize("mode", [Mode.AES, Mode.OTP])
def test_honest_reordering_and_loss_still_play_in_order(mode: Mode) -> None:
    sent, path, playout, counters = send(mode, 100)
    wire = []
    for s in sent:
        if s.index % 9 == 4:
            continue  # lost
        swap = 1 if s.index % 10 == 2 else -1 if s.index % 10 == 3 else 0
        wire.append((s.index * FRAME_S + 0.005 + swap * 0.012, s, s.seq, s.ts))
    wire.sort(key=lambda w: w[0])
    played = deliver(path, playout, wire)
    assert_in_authenticated_order(played)
    assert counters.misplaced == 0 and counters.frames_received == len(wire)
    assert len(played) >= len(wire) - 2
