"""The running call: from an established call to hang-up, bye and the keys erased.

:meth:`RunningCall.run` starts a :class:`~qphone.core.session.CallSession` from the handshake
result and runs the call's tasks until it ends:

* ``send``: the send path (:mod:`qphone.endpoint.sendpath`): capture, encode, protect, send;
* ``playout``: the receive path's playout (:mod:`qphone.endpoint.receivepath`), fed by the
  transport's frame callback (frames kept during the handshake first);
* ``control``: the control channel into the session; an unauthenticated message is ignored and
  counted, a rejected one ends the call (fail closed);
* ``watch``: the transport closing ends the call (connection lost);
* ``status`` (a terminal only): the status line every :data:`STATUS_INTERVAL_S`;
* ``timer`` (``--duration``): the call's length.

After each frame, control message and key delivery the session's events are dispatched
(:meth:`RunningCall.dispatch`): control messages to the transport, key requests to the key
supply (:mod:`qphone.endpoint.keysupply`), new epochs to the counters and the observer, an
overdue rotation warned about, a failed one or the peer's bye end the call.  Every ending goes
through the endpoint's :class:`~qphone.endpoint.callending.CallEnding` (the first outcome
counts); a task that dies ends the call too, never silently.  Once it ends: the send task
stops, no new KME request is made, frames on the wire get :data:`DRAIN_S` to arrive, then
:meth:`RunningCall.hang_up` says bye (authenticated, with its ``failed`` flag) and erases the
session's keys.  Closing the transport, the key supply and the key source is the endpoint's
(:mod:`qphone.endpoint.endpoint`), which also closes the audio this call started.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from qphone.audio.streams import CallAudio, DeviceSink, WavSink
from qphone.config.profile import Profile
from qphone.core.abort import decode_abort, is_abort
from qphone.core.callparams import Mode
from qphone.core.errors import ControlRejected, ControlUnauthenticated, QphoneError
from qphone.core.events import (
    EpochStarted,
    FetchQkdKeys,
    PeerBye,
    ResolveQkdKeys,
    RotationFailed,
    RotationOverdue,
    SendControl,
    SessionEvent,
)
from qphone.core.session import CallSession, new_session
from qphone.endpoint.callending import CallEnding
from qphone.endpoint.callsetup import EstablishedCall
from qphone.endpoint.console import Console
from qphone.endpoint.keysupply import KeySupply
from qphone.endpoint.observer import CallObserver, EpochChange
from qphone.endpoint.options import CallOptions
from qphone.endpoint.outcome import (
    CallEnd,
    connection_lost,
    control_refused,
    key_supply_stopped,
    peer_failed,
    rotation_failed,
    task_failed,
)
from qphone.endpoint.playout import Playout
from qphone.endpoint.receivepath import ReceivePath
from qphone.endpoint.sendpath import SendPath
from qphone.endpoint.state import CallCounters, CallPhase, PhaseTracker
from qphone.endpoint.statusline import status_line
from qphone.kmeclient import KmeError
from qphone.transport.errors import TransportError

DRAIN_S = 0.15  # after the last frame is sent, before the bye
BYE_LINGER_S = 0.2  # let the bye leave before the connection closes
STATUS_INTERVAL_S = 0.5


class RunningCall:
    """One established call, run until it ends (:meth:`run`), then its bye and keys erased."""

    def __init__(
        self,
        established: EstablishedCall,
        profile: Profile,
        options: CallOptions,
        *,
        keys: KeySupply,
        audio: CallAudio,
        playout: Playout,
        counters: CallCounters,
        phase: PhaseTracker,
        console: Console,
        ending: CallEnding,
        observer: CallObserver | None = None,
    ) -> None:
        self.established = established
        self.transport = established.transport
        self.profile = profile
        self.opt = options
        self.keys = keys
        self.audio = audio
        self.playout = playout
        self.counters = counters
        self.phase = phase
        self.console = console
        self.ending = ending
        self._observer = observer
        self._max_overdue = profile.policy.max_overdue_epochs
        self.session: CallSession = new_session(
            established.result,
            max_overdue_epochs=self._max_overdue,
            pad_lookahead_s=options.pad_lookahead_s,
        )
        self.sas = self.session.sas
        self.started = 0.0  # monotonic time the call (media) started
        self.rtt_s: float | None = None  # the last round-trip time the transport reported
        self.pad_left_bits = 0  # OTP pad held ahead when the keys were erased
        self.ran = False  # the call's tasks were started (the audio is open)

    # ------------------------------------------------------------------ the call
    async def run(self) -> None:
        """Run the call until it ends (:attr:`ending` says how).  Once its tasks ran (:attr:`ran`),
        on return or any exception they are stopped, the bye was sent and the keys are erased;
        an exception before that leaves the bye-less :meth:`hang_up` to the endpoint."""
        session = self.session
        if self.keys.request_s > 0:  # the handshake key's request: how slow key comes
            session.key_latency(self.keys.request_s)
        self.keys.attach(session, self.drain, self._key_supply_failed)
        cfg = self.opt.opus()
        source, paced, sink = self.audio.source, self.audio.paced, self.audio.sink
        await source.start()
        if isinstance(sink, WavSink):
            sink.warn = self.console.warn  # a recording that has to move says so on this console
        await sink.start()
        pqc = " PQC-ONLY (no QKD)" if self.established.pqc_only else ""
        self.console.say(
            f"connected to {self.profile.peer_sae_id} "
            f"({self.established.result.peer.fingerprint()}), mode {session.mode.label}{pqc}"
        )
        self.console.say(f"SAS: >>> {session.sas} <<<  (read it aloud; both screens must show it)")
        self.phase.advance(CallPhase.IN_CALL)
        self.started = time.monotonic()
        receive = ReceivePath(
            session,
            self.playout,
            self.counters,
            drain_events=self.drain,
            observer=self._observer,
            warn=self.console.warn,
        )
        send = SendPath(
            session,
            self.transport,
            cfg,
            self.counters,
            warn=self.console.warn,
            drain_events=self.drain,
            end_call=self.ending.finish,
            stopped=self.ending.stopped,
            hang_up_when_input_ends=self.opt.duration is None,
            observer=self._observer,
        )
        self.dispatch(session.start())
        early = self.established.early
        while early:
            receive.on_frame(early.popleft())
        self.transport.set_frame_callback(receive.on_frame)
        tasks = [
            asyncio.create_task(
                send.run(source, paced, realtime=self._realtime(paced, sink)), name="send"
            ),
            asyncio.create_task(receive.play(sink), name="playout"),
            asyncio.create_task(self._control_loop(), name="control"),
            asyncio.create_task(self._watch_transport(), name="watch"),
        ]
        if self.console.live_status:
            tasks.append(asyncio.create_task(self._status_loop(), name="status"))
        if self.opt.duration is not None:
            tasks.append(asyncio.create_task(self._timer(self.opt.duration), name="timer"))
        for task in tasks:
            task.add_done_callback(self._task_ended)
        self.ran = True
        try:
            await self.ending.stopped.wait()
            # hang-up: stop talking and fetching key, let frames already on the wire arrive,
            # then say bye
            tasks[0].cancel()
            self.keys.hang_up()
            if self.ending.failure is None:
                await asyncio.sleep(DRAIN_S)
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            self.transport.set_frame_callback(None)
            await self.hang_up(send_bye=True)

    def _realtime(self, paced: bool, sink: object) -> bool:
        """Whether the media thread asks for real-time scheduling: when the options say so
        and no sound device is in the call (CallOptions.realtime)."""
        return self.opt.realtime and paced and not isinstance(sink, DeviceSink)

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        """No task of a running call dies silently: its exception ends the call."""
        exc = None if task.cancelled() else task.exception()
        if exc is None:
            return
        if isinstance(exc, TransportError):
            self.ending.finish(connection_lost(self.transport.close_reason))
        else:
            self.ending.finish(task_failed(task.get_name(), exc))

    # ------------------------------------------------------------------ the session's events
    def dispatch(self, events: list[SessionEvent]) -> None:
        """Carry out what the session asks (see the module's docstring)."""
        for ev in events:
            if isinstance(ev, SendControl):
                with contextlib.suppress(TransportError):
                    self.transport.send_control(ev.data)
            elif isinstance(ev, FetchQkdKeys | ResolveQkdKeys):
                self.keys.submit(ev)
            elif isinstance(ev, EpochStarted):
                sending = ev.direction is self.session.send_dir
                (self.counters.epochs_tx if sending else self.counters.epochs_rx).append(ev.epoch)
                if self._observer is not None:
                    self._observer.on_epoch(EpochChange(time.monotonic(), sending, ev.epoch))
            elif isinstance(ev, RotationOverdue):
                self.console.warn(
                    f"epoch {ev.epoch} is over but the next QKD key is not ready at both ends "
                    f"yet; keeping the current key for at most {self._max_overdue} more epochs "
                    "(KME slow or empty, or the peer's confirmation lost?)"
                )
            elif isinstance(ev, RotationFailed):
                self.ending.finish(rotation_failed(ev.epoch, ev.overdue))
            elif isinstance(ev, PeerBye):
                if ev.failed:
                    self.ending.finish(peer_failed(ev.reason))
                else:
                    self.ending.finish(CallEnd.peer_hung_up(ev.reason))

    def drain(self) -> None:
        """Dispatch the events the session has queued (after a frame, a message, keys)."""
        self.dispatch(self.session.events())

    def _key_supply_failed(self, exc: Exception) -> None:
        """The key supply worker stopped: the KME failed, or the session refused its keys.  An
        AES call allowed to go on PQC-only keeps its current key while the KME is failing."""
        kme_failed = isinstance(exc, KmeError)
        if kme_failed and self.opt.allow_pqc_only and self.session.mode is Mode.AES:
            self.console.warn(
                f"KME failed mid-call ({exc}); no fresh QKD key for the next epochs: the call "
                "continues on the current key as --allow-pqc-only permits, until rotation is "
                "overdue for too long (then it ends, fail closed)"
            )
            return
        self.ending.finish(key_supply_stopped(exc))

    # ------------------------------------------------------------------ the other tasks
    async def _control_loop(self) -> None:
        while True:
            data = await self.transport.recv_control()
            if is_abort(data):
                abort = decode_abort(data)
                self._ignore_control(f"an abort claiming '{abort.kind.claim}': {abort.reason}")
                continue
            try:
                self.session.receive_control(data)
            except ControlUnauthenticated as exc:
                self._ignore_control(str(exc))
                continue
            except ControlRejected as exc:
                self.ending.finish(control_refused(exc))
                return
            except QphoneError:
                return
            self.drain()

    def _ignore_control(self, what: str) -> None:
        """Keys exist: only the authenticated bye or a transport failure ends the call."""
        self.counters.control_ignored += 1
        if self.counters.control_ignored == 1:
            self.console.warn(
                f"ignored an unauthenticated message on the control channel ({what}); during "
                "the call only the peer's authenticated bye or a transport failure ends it"
            )

    async def _watch_transport(self) -> None:
        reason = await self.transport.wait_closed()
        self.ending.finish(connection_lost(reason))

    async def _timer(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self.ending.finish(CallEnd.duration(seconds))

    # ------------------------------------------------------------------ status
    def status_line(self) -> str:
        return status_line(
            self.phase.current,
            self.sas,
            self.session,
            self.counters,
            self.playout.jb.stats(),
            self.rtt_s,
            self.opt.frame_ms,
            time.monotonic() - self.started if self.started else 0.0,
        )

    async def _status_loop(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                self.rtt_s = (await self.transport.stats()).rtt_s
            self.console.show_status(self.status_line())
            await asyncio.sleep(STATUS_INTERVAL_S)

    # ------------------------------------------------------------------ end
    async def hang_up(self, send_bye: bool) -> None:
        """Bye (if asked) and the session's keys erased; once (later calls do nothing)."""
        s = self.session
        if s.closed:
            return
        self.pad_left_bits = 8 * s.pad_left_bytes
        if send_bye:
            end = self.ending.end
            with contextlib.suppress(Exception):
                reason, failed = (end.reason, end.failed) if end else ("hangup", False)
                self.transport.send_control(s.bye(reason, failed))
                await asyncio.sleep(BYE_LINGER_S)
        s.close()

    async def close_audio(self) -> None:
        """Close the input and output once the call ran (after the endpoint shut down)."""
        if not self.ran:
            return
        await self.audio.source.close()
        await self.audio.sink.close()
