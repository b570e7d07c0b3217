"""A call endpoint: the lifecycle of one call, from dialing or listening to its summary.

:meth:`CallEndpoint.call` and :meth:`CallEndpoint.answer` run the same steps:

1. connect: signaling, ICE, DTLS (:mod:`qphone.transport`); the caller first takes the
   handshake's QKD key from its KME (:mod:`qphone.endpoint.keysupply`);
2. the hybrid handshake on the control channel (:mod:`qphone.endpoint.handshakedriver`), then
   the peer's pinned identity (:mod:`qphone.endpoint.identitycheck`);
3. the call: a :class:`~qphone.core.session.CallSession` with the send path
   (:mod:`qphone.endpoint.sendpath`), the receive path and playout
   (:mod:`qphone.endpoint.receivepath`), control messages and the key supply, until the call
   ends (:class:`~qphone.endpoint.outcome.CallEnd`): hang-up, the peer's bye, or a failure;
4. shutdown: bye, keys erased, transport and KME client closed; the summary
   (:mod:`qphone.endpoint.summary`).

Failures end in one place, :meth:`CallEndpoint._run`: an exception of a kind in
:data:`~qphone.endpoint.outcome.HANDLED_FAILURES` becomes a typed
:class:`~qphone.endpoint.outcome.CallFailed` (:func:`~qphone.endpoint.outcome.call_failure`),
is shown, and is raised after the shutdown; the summary then carries it as ``error``.  Other
exceptions (a signaling error, an unreadable WAV file) propagate unchanged.  The phase is
observable (:attr:`CallEndpoint.phase`); a :class:`~qphone.endpoint.observer.CallObserver`
sees every frame, and a receive filter can be put on the transport.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import signal
import sys
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from qphone.audio.streams import CallAudio, WavSink, open_call_audio
from qphone.config.identityfile import load_or_create_identity
from qphone.config.pins import KnownPeers, PinStatus
from qphone.config.profile import Profile
from qphone.config.usedkeys import UsedKeys, used_keys_path
from qphone.core.abort import AbortKind, decode_abort, is_abort
from qphone.core.callparams import Mode
from qphone.core.displaytext import printable
from qphone.core.errors import (
    ControlRejected,
    ControlUnauthenticated,
    ProposalRefused,
    QphoneError,
)
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
from qphone.core.handshake import HandshakeResult, Role
from qphone.core.qkd import QkdKey
from qphone.core.session import CallSession
from qphone.core.signalmessage import SignalMessage
from qphone.endpoint.callscreen import check_answerer, screen_offer
from qphone.endpoint.console import Console, TextOut
from qphone.endpoint.handshakedriver import HandshakeDriver
from qphone.endpoint.identitycheck import PinCheck
from qphone.endpoint.keyroute import RouteReport, route_report
from qphone.endpoint.keysupply import KeySupply
from qphone.endpoint.observer import CallObserver, EpochChange
from qphone.endpoint.options import CallOptions
from qphone.endpoint.outcome import (
    HANDLED_FAILURES,
    CallEnd,
    CallFailed,
    CallInterrupted,
    ConnectionLost,
    ControlMessageRefused,
    EndCause,
    IdentityChanged,
    KeySupplyFailed,
    OutOfKey,
    PeerFailed,
    call_failure,
    key_supply_failure,
)
from qphone.endpoint.playout import Playout
from qphone.endpoint.policy import policy_refused, responder_policy
from qphone.endpoint.receivepath import ReceivePath
from qphone.endpoint.sendpath import SendPath
from qphone.endpoint.state import CallCounters, CallPhase, PhaseTracker
from qphone.endpoint.statusline import status_line
from qphone.endpoint.summary import CallSummary, SetupTimes, summarize
from qphone.kmeclient import KmeClient, KmeError
from qphone.transport.calltransport import CallTransport
from qphone.transport.errors import TransportError
from qphone.transport.frames import ReceivedFrame, ReceiveFilter
from qphone.transport.signaling import Refusal, SignalingListener
from qphone.transport.stats import TransportStats

T = TypeVar("T")
_DOING = {
    CallPhase.STARTING: "starting",
    CallPhase.LISTENING: "waiting for a call",
    CallPhase.CONNECTING: "connecting",
    CallPhase.HANDSHAKE: "in the handshake",
}
EARLY_FRAMES = 100  # frames kept that arrive before our side of the handshake is complete
DRAIN_S = 0.15  # after the last frame is sent, before the bye
BYE_LINGER_S = 0.2  # let the bye leave before the connection closes
STATUS_INTERVAL_S = 0.5
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
        self.times = SetupTimes()
        self.identity, self.identity_created = load_or_create_identity(profile.identity_file)
        self.kme = KmeClient.from_profile(profile)
        self.keys = KeySupply(
            self.kme,
            profile.peer_sae_id,
            used=UsedKeys(used_keys_path(profile.source, profile.identity_file)),
        )
        self._receive_filter = receive_filter
        self.transport = CallTransport(options.transport, receive_filter)
        self.handshake = HandshakeDriver(self.transport, self.identity)
        self.pins = PinCheck(
            KnownPeers(profile.known_peers), profile.peer_sae_id, options.trust_new_identity
        )  # _run() sets its .answering: an alarm then advises the side that saw it
        self.playout = Playout(options.opus())
        self.session: CallSession | None = None
        self.result: HandshakeResult | None = None
        self.pqc_only = False
        self.pin_status = ""
        self.sas = ""
        self.started = 0.0  # monotonic time the call (media) started
        self._observer = observer
        self._stop = asyncio.Event()
        self._end: CallEnd | None = None
        self._failure: CallFailed | None = None
        self._early: collections.deque[ReceivedFrame] = collections.deque(maxlen=EARLY_FRAMES)
        self._last_rtt: float | None = None
        self._transport_stats: TransportStats | None = None
        self._pad_left_bits = 0
        self._shut_down = False
        self._max_overdue = profile.policy.max_overdue_epochs
        self._interrupted = asyncio.Event()
        # the Python-level signal handlers this endpoint found (put back when it stops)
        self._outer_handlers: dict[int, Any] = {}
        self._route_before: dict[str, Any] | None = None  # the caller's KME status extension
        self.route: RouteReport | None = None  # what the call used of the key network

    # ------------------------------------------------------------------ messages to the user
    def say(self, text: str) -> None:
        self.console.say(text)

    def warn(self, text: str) -> None:
        self.console.warn(text)

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

    @property
    def end(self) -> CallEnd | None:
        """Why the call ended (None while it runs)."""
        return self._end

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
        if self.identity_created:
            self.say(f"created identity {self.profile.identity_file}")
        self.say(f"identity {self.identity.public.fingerprint()} (SAE {self.profile.sae_id})")
        self.say(f"audio in: {self.audio.source.description}; out: {self.audio.sink.description}")
        answering = role is Role.RESPONDER
        self.pins.answering = answering
        try:
            while True:
                try:
                    self.result = await self._until_interrupted(
                        self._setup(role, host, port, on_listening, accept_timeout)
                    )
                    break
                except HANDLED_FAILURES as exc:
                    if not (keep_waiting and answering and self._callers_mistake(exc)):
                        raise
                    await self._next_caller(exc)
            self._check_pin(self.result)
            await self._media()
        except CallInterrupted:
            await self._shutdown(send_bye=False)
            raise
        except HANDLED_FAILURES as exc:
            failure = call_failure(
                exc,
                peer_sae_id=self.profile.peer_sae_id,
                own_sae_id=self.profile.sae_id,
                answering=answering,
            )
            self._failure = failure
            if self._end is None:
                self._end = failure.end()
            self.say(f"call failed: {failure}")
            await self._shutdown(send_bye=False)
            if failure is exc:
                raise
            raise failure from exc
        finally:
            self._handle_signals(loop, False)
            self.phase.advance(CallPhase.ENDED)
        if self._end is not None and self._end.cause is EndCause.CANCELLED:
            raise CallInterrupted(self._end)  # interrupted between the handshake and the call
        return self.summary()

    def _callers_mistake(self, exc: Exception) -> bool:
        """A failed set-up that the caller caused, after it reached this answerer: a proposal
        the policy refuses, its abort (Ctrl-C in its handshake), its connection lost.  Not: a
        changed identity (the alarm must be seen), this side's KME, nothing reached us yet."""
        reached = self.phase.current is CallPhase.HANDSHAKE or bool(self.transport.peer_name)
        failure = call_failure(exc, peer_sae_id=self.profile.peer_sae_id, own_sae_id="")
        return reached and not isinstance(failure, IdentityChanged | KeySupplyFailed)

    async def _next_caller(self, exc: Exception) -> None:
        """Say why the call was not taken, drop its connection and start afresh."""
        failure = call_failure(
            exc, peer_sae_id=self.profile.peer_sae_id, own_sae_id=self.profile.sae_id
        )
        caller = printable(self.transport.peer_name, 128) or "a caller"
        self.say(f"call from {caller} not taken: {failure}")
        with contextlib.suppress(Exception):
            await self.transport.close()
        self.transport = CallTransport(self.opt.transport, self._receive_filter)
        self.handshake = HandshakeDriver(self.transport, self.identity)
        self._early.clear()
        self.times = SetupTimes()
        self.pqc_only = False

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
        if self.phase.current is CallPhase.HANDSHAKE:
            self.handshake.abort(AbortKind.FAILED, "the other side hung up during the handshake")
        assert self._end is not None
        raise CallInterrupted(self._end)

    async def _setup(
        self,
        role: Role,
        host: str,
        port: int,
        on_listening: Callable[[SignalingListener], None] | None,
        accept_timeout: float | None,
    ) -> HandshakeResult:
        """Connect (signaling, ICE, DTLS) and run the hybrid handshake."""
        qkd: list[QkdKey] = []
        own, peer = self.profile.sae_id, self.profile.peer_sae_id
        if role is Role.INITIATOR:
            t0 = time.monotonic()
            self.phase.advance(CallPhase.CONNECTING)
            self.say(f"calling {host}:{port} ...")
            mode = (self.opt.mode or Mode.AES).label
            await self.transport.connect_as_caller(host, port, caller=own, callee=peer, mode=mode)
            self.times.connect_ms = (time.monotonic() - t0) * 1e3
            wrong = check_answerer(self.transport.peer_name, own, peer)
            if wrong is not None:
                raise wrong
            self.phase.advance(CallPhase.HANDSHAKE)
            self.say(f"{self.transport.peer_name or 'the answerer'} answered: handshake ...")
            # the handshake's QKD key is taken only once the answerer has taken the call
            await self._kme_limits()
            qkd = await self._handshake_keys()
        else:
            self.phase.advance(CallPhase.LISTENING)

            def listening(listener: SignalingListener) -> None:
                self.say(f"waiting for a call on {listener.host}:{listener.port} ...")
                if on_listening is not None:
                    on_listening(listener)

            def screen(offer: SignalMessage) -> Refusal | None:
                screened = screen_offer(offer, own, peer, self.opt.mode)
                if screened is None:
                    return None
                self.say(f"{screened.note}; still waiting for a call")
                return screened.refusal

            await self.transport.accept_as_answerer(
                host,
                port,
                on_listening=listening,
                accept_timeout=accept_timeout,
                screen=screen,
                name=own,
            )
            self.phase.advance(CallPhase.HANDSHAKE)
            self.say(f"call from {self.transport.peer_name or 'a caller'}: handshake ...")
        # the caller may start talking before our side has processed its Finish: keep those
        # frames (bounded) until the session exists
        self.transport.set_frame_callback(self._early.append)
        t1 = time.monotonic()
        if role is Role.INITIATOR:
            result = await self.handshake.initiate(
                self.opt.call_params(self.pqc_only), qkd, self.pins.expected()
            )
        else:
            policy = responder_policy(self.profile.policy, self.opt, self.pins.expected())
            try:
                result = await self.handshake.respond(policy, self._resolve_handshake_keys)
            except ProposalRefused as exc:
                raise policy_refused(exc, self.profile) from exc
            self.pqc_only = result.params.pqc_only
        self.times.handshake_ms = (time.monotonic() - t1) * 1e3
        return result

    def _interrupt(self, loop: asyncio.AbstractEventLoop) -> None:
        """SIGINT/SIGTERM: hang up a running call; before that, stop setting it up."""
        self._handle_signals(loop, False)
        phase = self.phase.current
        if phase is CallPhase.IN_CALL:
            self._end_call(CallEnd.interrupted())
            return
        if self._end is None:
            self._end = CallEnd.cancelled(_DOING.get(phase, "setting up the call"))
        self._interrupted.set()
        self._stop.set()

    # ------------------------------------------------------------------ keys for the handshake
    async def _kme_limits(self) -> None:
        """The caller's KME status, asked once (unless the command line's check before dialing
        gave it): its key sizes and, from a qkd-keyserver node, the key route and relay
        counters the route report starts from."""
        status = self.opt.kme_limits
        if status is None:
            with contextlib.suppress(KmeError):
                status = await self.kme.status(self.profile.peer_sae_id)
                self.opt = dataclasses.replace(self.opt, kme_limits=status)
        if status is not None:
            self._route_before = status.status_extension or {}
            self.keys.max_keys_per_request = status.max_key_per_request

    async def _handshake_keys(self) -> list[QkdKey]:
        """The caller's QKD key for the handshake (ETSI 014 enc_keys), or PQC-only fallback."""
        t0 = time.monotonic()
        try:
            return await self.keys.handshake_keys(
                self.opt.call_params().handshake_qkd_bits,
                self.opt.kme_wait,
                lambda: self.say("waiting for the QKD link to deliver key ..."),
            )
        except KmeError as exc:
            mode = self.opt.mode or Mode.AES
            if self.opt.allow_pqc_only and mode is Mode.AES:
                self.warn(f"no QKD key ({exc}); continuing PQC-only (ML-KEM + X25519) as allowed")
                self.pqc_only = True
                return []
            hint = "" if mode is Mode.OTP else " (or allow a PQC-only call with --allow-pqc-only)"
            message = f"cannot get a QKD key from the KME: {exc}{hint}"
            self.handshake.abort(
                AbortKind.FAILED, "the caller could not get a QKD key from its KME"
            )
            raise key_supply_failure(message, exc) from exc
        finally:
            self.times.kme_ms = (time.monotonic() - t0) * 1e3

    async def _resolve_handshake_keys(self, key_ids: Sequence[uuid.UUID]) -> list[QkdKey]:
        """The answerer's side of the handshake's QKD key (ETSI 014 dec_keys)."""
        t0 = time.monotonic()
        try:
            return await self.keys.resolve_keys(key_ids)
        finally:
            self.times.kme_ms = (time.monotonic() - t0) * 1e3

    def _check_pin(self, result: HandshakeResult) -> None:
        try:
            self.pin_status = self.pins.check(result.peer, self.say, self.warn).value
        except IdentityChanged:
            self.pin_status = PinStatus.CHANGED.value
            self.handshake.abort(AbortKind.IDENTITY_REFUSED, "peer identity changed; call refused")
            raise

    # ------------------------------------------------------------------ the call
    async def _media(self) -> None:
        assert self.result is not None
        session = CallSession(
            self.result,
            max_overdue_epochs=self._max_overdue,
            pad_lookahead_s=self.opt.pad_lookahead_s,
        )
        self.session = session
        self.sas = session.sas
        if self.keys.request_s > 0:  # the handshake key's request: how slow key comes
            session.key_latency(self.keys.request_s)
        self.keys.attach(session, self._drain_session_events, self._key_supply_failed)
        cfg = self.opt.opus()
        source, paced, sink = self.audio.source, self.audio.paced, self.audio.sink
        await source.start()
        if isinstance(sink, WavSink):
            sink.warn = self.warn  # a recording that has to move says so on this console
        await sink.start()
        self.say(
            f"connected to {self.profile.peer_sae_id} ({self.result.peer.fingerprint()}), "
            f"mode {session.mode.label}{' PQC-ONLY (no QKD)' if self.pqc_only else ''}"
        )
        self.say(f"SAS: >>> {session.sas} <<<  (read it aloud; both screens must show it)")
        self.phase.advance(CallPhase.IN_CALL)
        self.started = time.monotonic()
        receive = ReceivePath(
            session,
            self.playout,
            self.counters,
            drain_events=self._drain_session_events,
            observer=self._observer,
            warn=self.warn,
        )
        send = SendPath(
            session,
            self.transport,
            cfg,
            self.counters,
            warn=self.warn,
            drain_events=self._drain_session_events,
            end_call=self._end_call,
            stopped=self._stop,
            hang_up_when_input_ends=self.opt.duration is None,
            observer=self._observer,
        )
        self._handle_session_events(session.start())
        while self._early:
            receive.on_frame(self._early.popleft())
        self.transport.set_frame_callback(receive.on_frame)
        tasks = [
            asyncio.create_task(send.run(source, paced), name="send"),
            asyncio.create_task(receive.play(sink), name="playout"),
            asyncio.create_task(self._control_loop(session), name="control"),
            asyncio.create_task(self._watch_transport(), name="watch"),
        ]
        if self.console.live_status:
            tasks.append(asyncio.create_task(self._status_loop(), name="status"))
        if self.opt.duration is not None:
            tasks.append(asyncio.create_task(self._timer(self.opt.duration), name="timer"))
        for task in tasks:
            task.add_done_callback(self._task_ended)
        try:
            await self._stop.wait()
            # hang-up: stop talking and fetching key, let frames already on the wire arrive,
            # then say bye
            tasks[0].cancel()
            self.keys.hang_up()
            if self._failure is None:
                await asyncio.sleep(DRAIN_S)
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            self.transport.set_frame_callback(None)
            await self._shutdown(send_bye=True)
            await source.close()
            await sink.close()
        if self._failure is not None:
            raise self._failure

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        """No task of a running call dies silently: its exception ends the call."""
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        if isinstance(exc, TransportError):
            self._end_call(ConnectionLost(f"connection lost ({self.transport.close_reason})"))
        else:
            self._end_call(
                CallFailed(f"the {task.get_name()} task failed: {type(exc).__name__}: {exc}")
            )

    def _end_call(self, outcome: CallEnd | CallFailed) -> None:
        """The one way a running call ends; the first outcome is the one that counts."""
        if self._end is None:
            if isinstance(outcome, CallFailed):
                self._failure = outcome
                self._end = outcome.end()
            else:
                self._end = outcome
        self._stop.set()

    def _handle_session_events(self, events: list[SessionEvent]) -> None:
        for ev in events:
            if isinstance(ev, SendControl):
                with contextlib.suppress(TransportError):
                    self.transport.send_control(ev.data)
            elif isinstance(ev, FetchQkdKeys | ResolveQkdKeys):
                self.keys.submit(ev)
            elif isinstance(ev, EpochStarted):
                assert self.session is not None
                sending = ev.direction is self.session.send_dir
                (self.counters.epochs_tx if sending else self.counters.epochs_rx).append(ev.epoch)
                if self._observer is not None:
                    self._observer.on_epoch(EpochChange(time.monotonic(), sending, ev.epoch))
            elif isinstance(ev, RotationOverdue):
                self.warn(
                    f"epoch {ev.epoch} is over but the next QKD key is not ready at both ends "
                    f"yet; keeping the current key for at most {self._max_overdue} more epochs "
                    "(KME slow or empty, or the peer's confirmation lost?)"
                )
            elif isinstance(ev, RotationFailed):
                self._end_call(
                    OutOfKey(
                        f"key rotation could not complete: epoch {ev.epoch} is {ev.overdue} "
                        f"epochs overdue (the limit, max_overdue_epochs) because epoch "
                        f"{ev.epoch + 1} is not ready at both ends: the KME did not deliver or "
                        "the peer's confirmation never arrived; the call ends (fail closed)"
                    )
                )
            elif isinstance(ev, PeerBye):
                if ev.failed:
                    self._end_call(PeerFailed(f"the peer ended the call: {ev.reason}"))
                else:
                    self._end_call(CallEnd.peer_hung_up(ev.reason))

    def _drain_session_events(self) -> None:
        if self.session is not None:
            self._handle_session_events(self.session.events())

    def _key_supply_failed(self, exc: Exception) -> None:
        """The key supply worker stopped: the KME failed, or the session refused its keys."""
        if not isinstance(exc, KmeError):
            self._end_call(
                KeySupplyFailed(f"the KME delivered keys this call cannot use: {exc} (fail closed)")
            )
            return
        if self.opt.allow_pqc_only and self.session is not None and self.session.mode is Mode.AES:
            self.warn(
                f"KME failed mid-call ({exc}); no fresh QKD key for the next epochs: the call "
                "continues on the current key as --allow-pqc-only permits, until rotation is "
                "overdue for too long (then it ends, fail closed)"
            )
            return
        self._end_call(
            key_supply_failure(f"QKD key supply failed mid-call: {exc} (fail closed)", exc)
        )

    async def _control_loop(self, session: CallSession) -> None:
        while True:
            data = await self.transport.recv_control()
            if is_abort(data):
                abort = decode_abort(data)
                self._ignore_control(f"an abort claiming '{abort.kind.claim}': {abort.reason}")
                continue
            try:
                session.receive_control(data)
            except ControlUnauthenticated as exc:
                self._ignore_control(str(exc))
                continue
            except ControlRejected as exc:
                self._end_call(
                    ControlMessageRefused(
                        f"control message rejected ({exc}); call ended (fail closed)"
                    )
                )
                return
            except QphoneError:
                return
            self._drain_session_events()

    def _ignore_control(self, what: str) -> None:
        """Keys exist: only the authenticated bye or a transport failure ends the call."""
        self.counters.control_ignored += 1
        if self.counters.control_ignored == 1:
            self.warn(
                f"ignored an unauthenticated message on the control channel ({what}); during "
                "the call only the peer's authenticated bye or a transport failure ends it"
            )

    async def _watch_transport(self) -> None:
        reason = await self.transport.wait_closed()
        self._end_call(ConnectionLost(f"connection lost ({reason})"))

    async def _timer(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self._end_call(CallEnd.duration(seconds))

    # ------------------------------------------------------------------ status
    def status_line(self) -> str:
        return status_line(
            self.phase.current,
            self.sas,
            self.session,
            self.counters,
            self.playout.jb.stats(),
            self._last_rtt,
            self.opt.frame_ms,
            time.monotonic() - self.started if self.started else 0.0,
        )

    async def _status_loop(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                self._last_rtt = (await self.transport.stats()).rtt_s
            self.console.show_status(self.status_line())
            await asyncio.sleep(STATUS_INTERVAL_S)

    # ------------------------------------------------------------------ end
    async def _shutdown(self, send_bye: bool) -> None:
        """Bye (if asked), erase the keys, close everything; once."""
        if self._shut_down:
            return
        self._shut_down = True
        s = self.session
        if s is not None and not s.closed:
            self._pad_left_bits = 8 * s.pad_left_bytes
            if send_bye:
                end = self._end
                with contextlib.suppress(Exception):
                    reason, failed = (end.reason, end.failed) if end else ("hangup", False)
                    self.transport.send_control(s.bye(reason, failed))
                    await asyncio.sleep(BYE_LINGER_S)
            s.close()
        await self.keys.aclose()
        with contextlib.suppress(Exception):
            self._transport_stats = await self.transport.stats()
            self._last_rtt = self._transport_stats.rtt_s
        with contextlib.suppress(Exception):
            await self.transport.close()
        await self._route_after()
        with contextlib.suppress(Exception):
            await self.kme.aclose()
        self.console.clear_status()
        if self._failure is None:  # a failure was said already, in one line
            self.say(f"call ended: {self._end or 'hangup'}")

    async def _route_after(self) -> None:
        """The caller asks its KME again after the call: the relays the call's keys took."""
        if self._route_before is None:
            return
        after: dict[str, Any] | None = None
        with contextlib.suppress(Exception):  # a report, never a reason for shutdown to fail
            async with asyncio.timeout(ROUTE_STATUS_TIMEOUT_S):
                after = (await self.kme.status(self.profile.peer_sae_id)).status_extension
        self.route = route_report(self._route_before, after)
        if self._failure is None and self.route is not None and self.route.route is not None:
            self.say(self.route.describe())

    def summary(self) -> CallSummary:
        s = self.session
        return summarize(
            sas=self.sas,
            mode=s.mode if s is not None else (self.opt.mode or Mode.AES),
            result=self.result,
            pqc_only=self.pqc_only,
            peer_sae_id=self.profile.peer_sae_id,
            peer_pin=self.pin_status,
            times=self.times,
            counters=self.counters,
            accounting=s.key_accounting() if s is not None else None,
            drawn_bits=self.keys.drawn_bits,
            dropped_bits=self.keys.dropped_bits,
            playout=self.playout,
            pad_left_bits=self._pad_left_bits,
            started=self.started,
            end=self._end,
            warnings=self.console.warnings,
            transport=self._transport_stats,
            error=str(self._failure) if self._failure is not None else None,
            route=self.route,
        )
