"""Rotation that cannot complete fails closed after a bounded number of overdue epochs."""

from __future__ import annotations

import contextlib

import pytest

from qphone.core.callparams import CallParams
from qphone.core.control import EPOCH_ANNOUNCE, EPOCH_READY
from qphone.core.errors import ControlUnauthenticated, KeyExhausted
from qphone.core.events import RotationFailed, RotationOverdue, SendControl, SessionEvent
from qphone.core.session import CallSession, new_session
from qphone.demo.inmemorycall import InMemoryCall, MemoryKmePair, handshake
from tests.support.inmemorycalls import ALICE, BOB


class Suppressing(InMemoryCall):
    """An in-memory call whose control path drops one kind of message from one side."""

    def __init__(self, params: CallParams, drop_from_responder: int | None, drop: int) -> None:
        self.drop_from_responder, self.drop, self.dropped = drop_from_responder, drop, 0
        kme = MemoryKmePair()
        ini, res = handshake(ALICE, BOB, params, kme)
        super().__init__(ini, res, kme)
        self.pump()

    def events_of(self, s: CallSession) -> list[SessionEvent]:
        return [ev for who, ev in self.log if who is s]

    def dispatch(self, s: CallSession, events: list[SessionEvent]) -> None:
        responder = s is self.responder
        kept = []
        for ev in events:
            if (
                isinstance(ev, SendControl)
                and ev.data[0] == self.drop
                and responder == bool(self.drop_from_responder)
            ):
                self.dropped += 1
                continue
            kept.append(ev)
        super().dispatch(s, kept)

    def pump(self) -> None:
        """As InMemoryCall.pump, but what fails authentication or sequencing is ignored (the
        endpoint does the same during a call)."""
        busy = True
        while busy:
            busy = False
            for s in (self.initiator, self.responder):
                events = s.events()
                if events:
                    busy = True
                    self.dispatch(s, events)
                box = self._inbox[id(s)]
                while box and not s.closed:
                    busy = True
                    with contextlib.suppress(ControlUnauthenticated):
                        s.receive_control(box.pop(0))
                    self.dispatch(s, s.events())


def run(call: Suppressing, frames: int) -> tuple[int, int]:
    """Send ``frames`` both ways; return how many each side protected before it stopped."""
    sent = {id(call.initiator): 0, id(call.responder): 0}
    for i in range(frames):
        now = i * 0.02
        for s in (call.initiator, call.responder):
            try:
                frame = s.protect(b"x" * 20, now)
            except KeyExhausted:
                continue
            sent[id(s)] += 1
            call.peer(s).unprotect(frame, now)
        call.pump()
    return sent[id(call.initiator)], sent[id(call.responder)]


PARAMS = CallParams(rotate_frames=10, rotate_ms=10_000, lookahead=1)


def test_suppressed_epoch_ready_fails_closed_after_the_limit() -> None:
    """Dropping the responder's EpochReady kept the initiator on epoch 0 forever."""
    call = Suppressing(PARAMS, drop_from_responder=True, drop=EPOCH_READY)
    ini_sent, res_sent = run(call, 200)
    ini_events = call.events_of(call.initiator)
    assert call.dropped >= 1 and call.initiator.send_epoch == 0
    assert RotationOverdue(0) in ini_events
    # epoch 0 lasts 10 frames, then may run 2 more epoch lengths: 30 frames, not one more
    assert RotationFailed(0, 2) in ini_events
    assert ini_sent == 30
    with pytest.raises(KeyExhausted, match="overdue"):
        call.initiator.protect(b"x", 10.0)
    assert res_sent == 200  # the responder's own rotation was not suppressed


def test_suppressed_epoch_announce_fails_the_responder_closed() -> None:
    call = Suppressing(PARAMS, drop_from_responder=False, drop=EPOCH_ANNOUNCE)
    _ini_sent, res_sent = run(call, 200)
    assert RotationFailed(0, 2) in call.events_of(call.responder)
    assert res_sent == 30 and call.responder.send_epoch == 0


def test_the_limit_is_configurable_and_also_counts_time() -> None:
    kme = MemoryKmePair()
    ini, _ = handshake(ALICE, BOB, CallParams(rotate_frames=10_000, rotate_ms=1000), kme)
    session = new_session(ini, max_overdue_epochs=3)  # no peer: nothing ever gets ready
    t, sent = 0.0, 0
    while t < 10:
        try:
            session.protect(b"x", t)
            sent += 1
        except KeyExhausted:
            break
        t += 0.02
    events = session.events()
    assert RotationFailed(0, 3) in events
    assert 3.9 < t < 4.1  # 1 s of epoch, then 3 s overdue (time as given, not measured)
    with pytest.raises(ValueError):
        new_session(ini, max_overdue_epochs=0)


def test_a_late_confirmation_within_the_limit_rotates_normally() -> None:
    call = Suppressing(PARAMS, drop_from_responder=None, drop=-1)  # drops nothing
    ini_sent, res_sent = run(call, 200)
    assert ini_sent == res_sent == 200
    assert call.initiator.send_epoch >= 15
    assert not any(isinstance(e, RotationFailed) for e in call.events_of(call.initiator))
