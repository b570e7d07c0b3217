"""The state of a call that others can watch: its phase (observable, awaitable) and counters."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from qphone.audio.level import SILENCE_DBFS

MAX_UNSENT_SPELLS = 32  # runs of unsent frames recorded for the summary's pad timeline


class CallPhase(Enum):
    """Where a call is; the value is what the status line shows."""

    STARTING = "starting"
    LISTENING = "listening"  # answerer: waiting for a caller
    CONNECTING = "connecting"  # caller: signaling, ICE, DTLS
    HANDSHAKE = "handshake"  # the hybrid handshake on the control channel
    IN_CALL = "in call"  # media flowing both ways
    ENDED = "ended"  # hung up or failed; final


class PhaseTracker:
    """The current :class:`CallPhase`; listeners hear every change, coroutines can wait for one."""

    def __init__(self) -> None:
        self._phase = CallPhase.STARTING
        self._listeners: list[Callable[[CallPhase], None]] = []
        self._waiters: list[tuple[CallPhase, asyncio.Future[CallPhase]]] = []

    @property
    def current(self) -> CallPhase:
        return self._phase

    def subscribe(self, listener: Callable[[CallPhase], None]) -> None:
        """Call ``listener(phase)`` on every change from now on."""
        self._listeners.append(listener)

    def advance(self, phase: CallPhase) -> None:
        if phase is self._phase or self._phase is CallPhase.ENDED:
            return
        self._phase = phase
        for listener in list(self._listeners):
            listener(phase)
        waiting, self._waiters = self._waiters, []
        for wanted, future in waiting:
            if future.done():
                continue
            if phase is wanted or phase is CallPhase.ENDED:
                future.set_result(phase)
            else:
                self._waiters.append((wanted, future))

    async def wait_for(self, phase: CallPhase) -> CallPhase:
        """Return once the call is in ``phase`` (or ended first: then ENDED is returned)."""
        if self._phase is phase or self._phase is CallPhase.ENDED:
            return self._phase
        future: asyncio.Future[CallPhase] = asyncio.get_running_loop().create_future()
        self._waiters.append((phase, future))
        return await future


@dataclass
class CallCounters:
    """What the media paths counted (the summary and the status line read them)."""

    frames_sent: int = 0
    payload_bytes_sent: int = 0  # Opus bytes (before protection)
    frames_unsent: int = 0  # dropped at the sender for want of fresh key (never reused)
    frames_received: int = 0  # unprotected successfully
    rejected: Counter[str] = field(default_factory=Counter)  # by FrameRejected subclass name
    misplaced: int = 0  # authentic, but RTP sequence/timestamp disagree with its position
    control_ignored: int = 0  # unauthenticated control messages (aborts included) in the call
    encode_seconds: float = 0.0
    protect_seconds: float = 0.0
    unprotect_seconds: float = 0.0
    input_level: float = SILENCE_DBFS  # of the last frame captured
    epochs_tx: list[int] = field(default_factory=list)  # epochs the sender switched to
    epochs_rx: list[int] = field(default_factory=list)  # epochs first received
    media_priority: str = ""  # what the media thread runs at (priority.MediaPriority.describe)
    talk_started: float | None = None  # monotonic time the send path started talking
    # runs of frames unsent for want of key: (seconds after talking started, frames), the first
    # MAX_UNSENT_SPELLS of them (frames_unsent counts them all)
    unsent_spells: list[tuple[float, int]] = field(default_factory=list)
    _spell_recorded: bool = field(default=False, repr=False)  # the current run is in the list

    def count_unsent(self, now: float, new_spell: bool) -> None:
        """One frame unsent for want of key at ``now`` (``new_spell``: the first of a run)."""
        self.frames_unsent += 1
        spells = self.unsent_spells
        if new_spell:
            self._spell_recorded = len(spells) < MAX_UNSENT_SPELLS
            if self._spell_recorded:
                at = now - self.talk_started if self.talk_started is not None else 0.0
                spells.append((at, 1))
        elif self._spell_recorded and spells:
            start, frames = spells[-1]
            spells[-1] = (start, frames + 1)

    @property
    def payload_bytes_per_frame(self) -> float:
        return self.payload_bytes_sent / max(1, self.frames_sent)
