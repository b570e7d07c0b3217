"""The call phase: observable and awaitable, final once ENDED."""

from __future__ import annotations

import asyncio

from qphone.endpoint.state import CallPhase, PhaseTracker


async def test_listeners_hear_every_change_and_waiters_wake() -> None:
    phase = PhaseTracker()
    heard: list[CallPhase] = []
    phase.subscribe(heard.append)
    waiting = asyncio.ensure_future(phase.wait_for(CallPhase.IN_CALL))
    await asyncio.sleep(0)
    for p in (CallPhase.CONNECTING, CallPhase.HANDSHAKE):
        phase.advance(p)
    await asyncio.sleep(0)
    assert not waiting.done()
    phase.advance(CallPhase.IN_CALL)
    assert await waiting is CallPhase.IN_CALL
    assert await phase.wait_for(CallPhase.IN_CALL) is CallPhase.IN_CALL  # already there
    phase.advance(CallPhase.ENDED)
    phase.advance(CallPhase.IN_CALL)  # ENDED is final
    assert phase.current is CallPhase.ENDED
    assert heard == [CallPhase.CONNECTING, CallPhase.HANDSHAKE, CallPhase.IN_CALL, CallPhase.ENDED]


async def test_waiting_for_a_phase_the_call_never_reaches() -> None:
    phase = PhaseTracker()
    waiting = asyncio.ensure_future(phase.wait_for(CallPhase.IN_CALL))
    await asyncio.sleep(0)
    phase.advance(CallPhase.LISTENING)
    phase.advance(CallPhase.ENDED)  # failed before the call was up
    assert await waiting is CallPhase.ENDED
    assert await phase.wait_for(CallPhase.HANDSHAKE) is CallPhase.ENDED
