"""A call endpoint: the lifecycle of one call, from dialing or listening to its summary.

:meth:`CallEndpoint.call` and :meth:`CallEndpoint.answer` run the same steps:

1. the set-up (:mod:`qphone.endpoint.callsetup`): connect (signaling, ICE, DTLS), screen, the
   handshake's QKD key from the key source, the hybrid handshake and the peer's pinned identity,
   giving an :class:`~qphone.endpoint.callsetup.EstablishedCall`;
2. the running call (:mod:`qphone.endpoint.runningcall`): a
   :class:`~qphone.core.session.CallSession` with the send path, the receive path and playout,
   control messages and the key supply, until the call ends
   (:class:`~qphone.endpoint.callending.CallEnding`): hang-up, the peer's bye, or a failure;
   then its bye and its keys erased;
3. shutdown (here): the key supply, the transport and the key source closed, the key route
   report; the summary (:mod:`qphone.endpoint.summary`).

The keys come from a :class:`~qphone.endpoint.keysource.KeySource`, taken the way httpx's client
takes a transport: by default the profile's ETSI 014 KME (:class:`qphone.kmeclient.KmeClient`),
in tests an in-memory one.  Failures end in one place, :meth:`CallEndpoint._run`: an exception
of a kind in :data:`~qphone.endpoint.outcome.HANDLED_FAILURES` becomes a typed
:class:`~qphone.endpoint.outcome.CallFailed` (:func:`~qphone.endpoint.outcome.call_failure`),
is shown, and is raised after the shutdown; the summary then carries it as ``error``.  Other
exceptions (a signaling error, an unreadable WAV file) propagate unchanged.  SIGINT and SIGTERM
hang up a running call, or stop the set-up (:class:`~qphone.endpoint.outcome.CallInterrupted`).
The phase is observable (:attr:`CallEndpoint.phase`); a
:class:`~qphone.endpoint.observer.CallObserver` sees every frame, and a receive filter can be
put on the transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from qphone.audio.streams import CallAudio, open_call_audio
from qphone.config.identityfile import load_or_create_identity
from qphone.config.profile import Profile
from qphone.config.usedkeys import UsedKeys, used_keys_path
from qphone.core.callparams import Mode
from qphone.core.handshake import Role
from qphone.core.session import CallSession
from qphone.endpoint.callending import CallEnding
from qphone.endpoint.callsetup import CallSetup, EstablishedCall
from qphone.endpoint.console import Console, TextOut
from qphone.endpoint.keyroute import RouteReport, route_report
from qphone.endpoint.keysource import KeySource
from qphone.endpoint.keysupply import KeySupply
from qphone.endpoint.observer import CallObserver
from qphone.endpoint.options import CallOptions
from qphone.endpoint.outcome import (
    HANDLED_FAILURES,
    CallEnd,
    CallInterrupted,
    EndCause,
    call_failure,
)
from qphone.endpoint.playout import Playout
from qphone.endpoint.runningcall import RunningCall
from qphone.endpoint.state import CallCounters, CallPhase, PhaseTracker
from qphone.endpoint.statusline import status_line
from qphone.endpoint.summary import CallSummary, summarize
from qphone.kmeclient import KmeClient
from qphone.transport.calltransport import CallTransport
from qphone.transport.frames import ReceiveFilter
from qphone.transport.signaling import SignalingListener
from qphone.transport.stats import TransportStats

T = TypeVar("T")
_DOING = {
    CallPhase.STARTING: "starting",
    CallPhase.LISTENING: "waiting for a call",
    CallPhase.CONNECTING: "connecting",
    CallPhase.HANDSHAKE: "in the handshake",
}
ROUTE_STATUS_TIMEOUT_S = 3.0  # the caller's KME status after the call (route report)


class CallEndpoint:
    """One side of a call. Use :meth:`call` or :meth:`answer`; both return the summary."""

    def __init__(
        self,
        profile: Profile,
        options: CallOptions,
        out: TextOut | None = None,
        *,
        observer: CallObserver | None = None,
        receive_filter: ReceiveFilter | None = None,
        audio: CallAudio | None = None,
        console: Console | None = None,
        key_source: KeySource | None = None,
    ) -> None:
        self.profile = profile
        self.opt = options
        # the input and output are checked before anything else (AudioSpecError)
        self.audio = audio or open_call_audio(
            options.input, options.output, options.opus(), options.loop_input
        )
        stream = out or sys.stderr
        self.console = console or Console(
            stream, options.status if options.status is not None else stream.isatty()
        )
        self.phase = PhaseTracker()
        self.counters = CallCounters()
        self.identity, self.identity_created = load_or_create_identity(profile.identity_file)
        self.key_source: KeySource = (
            key_source if key_source is not None else KmeClient.from_profile(profile)
        )
        self.used_keys = UsedKeys(used_keys_path(profile.source, profile.identity_file))
        self.keys = KeySupply(self.key_source, profile.peer_sae_id, used=self.used_keys)
        self.setup = CallSetup(
            profile,
            options,
            self.identity,
            self.keys,
            self.key_source,
            self.phase,
            self.console,
            receive_filter,
        )
        self.playout = Playout(options.opus())
        self.ending = CallEnding()
        self.running: RunningCall | None = None  # once the call is established
        self.route: RouteReport | None = None  # what the call used of the key network
        self._observer = observer
        self._transport_stats: TransportStats | None = None
        self._shut_down = False
        self._interrupted = asyncio.Event()
        # the Python-level signal handlers this endpoint found (put back when it stops)
        self._outer_handlers: dict[int, Any] = {}

    # ------------------------------------------------------------------ what others watch
    @property
    def end(self) -> CallEnd | None:
        """Why the call ended (None while it runs)."""
        return self.ending.end

    @property
    def transport(self) -> CallTransport:
        """The call's transport (an answerer that keeps waiting has a new one per caller)."""
        return self.setup.transport

    @property
    def session(self) -> CallSession | None:
        """The running call's session (None until the call is established)."""
        return self.running.session if self.running is not None else None

    # ------------------------------------------------------------------ entry points
    async def call(self, host: str, port: int) -> CallSummary:
        return await self._run(Role.INITIATOR, host, port, None, None)

    async def answer(
        self,
        host: str,
        port: int,
        on_listening: Callable[[SignalingListener], None] | None = None,
        accept_timeout: float | None = None,
        *,
        keep_waiting: bool = False,
    ) -> CallSummary:
        """Wait for a call and take it.  With ``keep_waiting`` (``qphone answer``), a call that
        fails before it is up because of the caller (a proposal this side's policy refuses, the
        caller hanging up or vanishing in the handshake) is said in one line and the endpoint
        waits for the next caller; a changed identity or this side's own KME failing still end
        it."""
        return await self._run(
            Role.RESPONDER, host, port, on_listening, accept_timeout, keep_waiting
        )

    async def _run(
        self,
        role: Role,
        host: str,
        port: int,
        on_listening: Callable[[SignalingListener], None] | None,
        accept_timeout: float | None,
        keep_waiting: bool = False,
    ) -> CallSummary:
        loop = asyncio.get_running_loop()
        self._handle_signals(loop, True)
        say = self.console.say
        if self.identity_created:
            say(f"created identity {self.profile.identity_file}")
        say(f"identity {self.identity.public.fingerprint()} (SAE {self.profile.sae_id})")
        say(f"audio in: {self.audio.source.description}; out: {self.audio.sink.description}")
        answering = role is Role.RESPONDER
        try:
            while True:
                try:
                    established = await self._until_interrupted(
                        self.setup.establish(role, host, port, on_listening, accept_timeout)
                    )
                    break
                except HANDLED_FAILURES as exc:
                    if not (keep_waiting and answering and self.setup.callers_mistake(exc)):
                        raise
                    await self.setup.next_caller(exc)
            await self._in_call(established)
        except CallInterrupted:
            await self._shutdown()
            raise
        except HANDLED_FAILURES as exc:
            failure = call_failure(
                exc,
                peer_sae_id=self.profile.peer_sae_id,
                own_sae_id=self.profile.sae_id,
                answering=answering,
            )
            self.ending.fail(failure)
            say(f"call failed: {failure}")
            await self._shutdown()
            if failure is exc:
                raise
            raise failure from exc
        finally:
            self._handle_signals(loop, False)
            self.phase.advance(CallPhase.ENDED)
        end = self.ending.end
        if end is not None and end.cause is EndCause.CANCELLED:
            raise CallInterrupted(end)  # interrupted between the handshake and the call
        return self.summary()

    async def _in_call(self, established: EstablishedCall) -> None:
        """Run the established call; once it ran, shut down and close its audio; raise its
        failure, if it failed."""
        running = RunningCall(
            established,
            self.profile,
            self.opt,
            keys=self.keys,
            audio=self.audio,
            playout=self.playout,
            counters=self.counters,
            phase=self.phase,
            console=self.console,
            ending=self.ending,
            observer=self._observer,
        )
        self.running = running
        try:
            await running.run()
        finally:
            if running.ran:
                await self._shutdown()
                await running.close_audio()
        if self.ending.failure is not None:
            raise self.ending.failure

    # ------------------------------------------------------------------ interrupts
    def _handle_signals(self, loop: asyncio.AbstractEventLoop, on: bool) -> None:
        """SIGINT and SIGTERM interrupt this endpoint (once: a second one acts as usual).
        The handler found before (``qphone demo``'s and ``loopback``'s, which stop the command
        and its keyserver) is put back afterwards, not the default one asyncio would leave."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                if on:
                    before = signal.getsignal(sig)
                    loop.add_signal_handler(sig, self._interrupt, loop)
                    if before is not signal.getsignal(sig):  # not another endpoint's
                        self._outer_handlers[sig] = before
                else:
                    loop.remove_signal_handler(sig)
                    outer = self._outer_handlers.pop(sig, None)
                    if outer is not None:
                        signal.signal(sig, outer)

    def _interrupt(self, loop: asyncio.AbstractEventLoop) -> None:
        """SIGINT/SIGTERM: hang up a running call; before that, stop setting it up."""
        self._handle_signals(loop, False)
        phase = self.phase.current
        if phase is CallPhase.IN_CALL:
            self.ending.finish(CallEnd.interrupted())
            return
        self.ending.cancel(_DOING.get(phase, "setting up the call"))
        self._interrupted.set()

    async def _until_interrupted(self, setup: Coroutine[Any, Any, T]) -> T:
        """Run a set-up step; an interrupt cancels it and raises :class:`CallInterrupted`."""
        task = asyncio.ensure_future(setup)
        interrupted = asyncio.ensure_future(self._interrupted.wait())
        try:
            await asyncio.wait({task, interrupted}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            interrupted.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        succeeded = not task.cancelled() and task.exception() is None
        if succeeded or not self._interrupted.is_set():
            return task.result()  # its result, or the exception it failed with
        self.setup.interrupted()
        assert self.ending.end is not None
        raise CallInterrupted(self.ending.end)

    # ------------------------------------------------------------------ end
    async def _shutdown(self) -> None:
        """Erase the keys (after the running call's bye, if it ran), close everything; once."""
        if self._shut_down:
            return
        self._shut_down = True
        if self.running is not None:
            await self.running.hang_up(send_bye=False)  # nothing left to do if it said bye
        await self.keys.aclose()
        self.used_keys.close()  # after a claim still on its thread
        with contextlib.suppress(Exception):
            self._transport_stats = await self.transport.stats()
            if self.running is not None:
                self.running.rtt_s = self._transport_stats.rtt_s
        with contextlib.suppress(Exception):
            await self.transport.close()
        await self._route_after()
        with contextlib.suppress(Exception):
            await self.key_source.aclose()
        self.console.clear_status()
        if self.ending.failure is None:  # a failure was said already, in one line
            self.console.say(f"call ended: {self.ending.end or 'hangup'}")

    async def _route_after(self) -> None:
        """The caller asks its KME again after the call: the relays the call's keys took."""
        before = self.setup.route_before
        if before is None:
            return
        after: dict[str, Any] | None = None
        with contextlib.suppress(Exception):  # a report, never a reason for shutdown to fail
            async with asyncio.timeout(ROUTE_STATUS_TIMEOUT_S):
                after = (await self.key_source.status(self.profile.peer_sae_id)).status_extension
        self.route = route_report(before, after)
        if self.ending.failure is None and self.route is not None and self.route.route is not None:
            self.console.say(self.route.describe())

    # ------------------------------------------------------------------ status and summary
    def status_line(self) -> str:
        if self.running is not None:
            return self.running.status_line()
        return status_line(
            self.phase.current,
            "",
            None,
            self.counters,
            self.playout.jb.stats(),
            self._transport_stats.rtt_s if self._transport_stats is not None else None,
            self.opt.frame_ms,
            0.0,
        )

    def summary(self) -> CallSummary:
        run, setup, failure = self.running, self.setup, self.ending.failure
        s = run.session if run is not None else None
        return summarize(
            sas=run.sas if run is not None else "",
            mode=s.mode if s is not None else (self.opt.mode or Mode.AES),
            result=setup.result,
            pqc_only=setup.pqc_only,
            peer_sae_id=self.profile.peer_sae_id,
            peer_pin=setup.pin_status,
            times=setup.times,
            counters=self.counters,
            accounting=s.key_accounting() if s is not None else None,
            drawn_bits=self.keys.drawn_bits,
            dropped_bits=self.keys.dropped_bits,
            playout=self.playout,
            pad_left_bits=run.pad_left_bits if run is not None else 0,
            started=run.started if run is not None else 0.0,
            end=self.ending.end,
            warnings=self.console.warnings,
            transport=self._transport_stats,
            error=str(failure) if failure is not None else None,
            route=self.route,
            fetch_log=self.keys.fetch_log,
            hedges=(self.keys.hedges, self.keys.hedges_in_vain),
        )
