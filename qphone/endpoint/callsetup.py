"""Setting a call up: from dialing or listening to an authenticated peer (an established call).

:meth:`CallSetup.establish` runs the set-up steps of one side, in order:

1. connect: the caller dials (signaling, ICE, DTLS; :mod:`qphone.transport`) and checks who
   answered (:func:`~qphone.endpoint.callscreen.check_answerer`); the answerer listens and
   screens each offer (:func:`~qphone.endpoint.callscreen.screen_offer`), still listening after
   a refusal;
2. handshake keys: the caller asks its key source's ETSI 014 status once (key sizes; a
   qkd-keyserver node's route report starts from it) and takes the handshake's QKD key
   (``enc_keys``, only now that the answerer took the call, so a refused call draws no key), or
   goes on PQC-only where the options allow it; the answerer resolves the announced IDs
   (``dec_keys``) from inside the handshake;
3. the hybrid handshake on the control channel (:class:`HandshakeDriver`); frames the caller
   sends before this side has finished it are kept (bounded) for the running call;
4. the pin check (:class:`~qphone.endpoint.identitycheck.PinCheck`): the peer's identity is
   pinned on first use, a changed one refused.

The result is an :class:`EstablishedCall`, what :mod:`qphone.endpoint.runningcall` starts
from.  Failures propagate as the layers raise them (the endpoint maps them in one place); an
answerer that keeps waiting asks :meth:`CallSetup.callers_mistake` whether a failure was the
caller's and then :meth:`CallSetup.next_caller`, which says why the call was not taken and
starts afresh on a new transport.
"""

from __future__ import annotations

import collections
import contextlib
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from qphone.config.pins import KnownPeers, PinStatus
from qphone.config.profile import Profile
from qphone.core.abort import AbortKind
from qphone.core.callparams import Mode
from qphone.core.displaytext import printable
from qphone.core.errors import ProposalRefused
from qphone.core.handshake import HandshakeResult, Role
from qphone.core.identity import Identity
from qphone.core.qkd import QkdKey
from qphone.core.signalmessage import SignalMessage
from qphone.endpoint.callscreen import check_answerer, screen_offer
from qphone.endpoint.console import Console
from qphone.endpoint.handshakedriver import HandshakeDriver
from qphone.endpoint.identitycheck import PinCheck
from qphone.endpoint.keysource import KeySource
from qphone.endpoint.keysupply import KeySupply
from qphone.endpoint.options import CallOptions
from qphone.endpoint.outcome import (
    IdentityChanged,
    KeySupplyFailed,
    call_failure,
    no_handshake_key,
)
from qphone.endpoint.policy import policy_refused, responder_policy
from qphone.endpoint.state import CallPhase, PhaseTracker
from qphone.endpoint.summary import SetupTimes
from qphone.kmeclient import KmeError, KmeStatus
from qphone.transport.calltransport import CallTransport
from qphone.transport.frames import ReceivedFrame, ReceiveFilter
from qphone.transport.signaling import Refusal, SignalingListener

EARLY_FRAMES = 100  # frames kept that arrive before our side of the handshake is complete


@dataclass(frozen=True)
class EstablishedCall:
    """What the set-up produces: an authenticated, pin-checked peer on a connected transport."""

    result: HandshakeResult
    transport: CallTransport
    pqc_only: bool  # no QKD key in the handshake (allowed by the options or the policy)
    # frames that arrived before the session existed; it keeps filling (bounded) until the
    # running call takes over the transport's frame callback
    early: collections.deque[ReceivedFrame]


class CallSetup:
    """One side's set-up of a call; :attr:`transport` and :attr:`handshake` are the current
    caller's (an answerer that keeps waiting replaces them for the next)."""

    def __init__(
        self,
        profile: Profile,
        options: CallOptions,
        identity: Identity,
        keys: KeySupply,
        key_source: KeySource,
        phase: PhaseTracker,
        console: Console,
        receive_filter: ReceiveFilter | None = None,
    ) -> None:
        self.profile = profile
        self.opt = options
        self.identity = identity
        self.keys = keys
        self.key_source = key_source
        self.phase = phase
        self.console = console
        self._receive_filter = receive_filter
        self.transport = CallTransport(options.transport, receive_filter)
        self.handshake = HandshakeDriver(self.transport, identity, options.handshake_timeout)
        self.pins = PinCheck(
            KnownPeers(profile.known_peers), profile.peer_sae_id, options.trust_new_identity
        )  # establish() sets its .answering: an alarm then advises the side that saw it
        self.times = SetupTimes()
        self.pqc_only = False
        self.result: HandshakeResult | None = None  # once the handshake completed
        self.pin_status = ""  # the PinStatus value, once checked
        # the caller's KME status extension, where the route report starts (None: not asked)
        self.route_before: dict[str, Any] | None = None
        self._early: collections.deque[ReceivedFrame] = collections.deque(maxlen=EARLY_FRAMES)

    # ------------------------------------------------------------------ the steps
    async def establish(
        self,
        role: Role,
        host: str,
        port: int,
        on_listening: Callable[[SignalingListener], None] | None = None,
        accept_timeout: float | None = None,
    ) -> EstablishedCall:
        """Connect (signaling, ICE, DTLS), run the hybrid handshake, check the peer's pin."""
        self.pins.answering = role is Role.RESPONDER
        qkd: list[QkdKey] = []
        if role is Role.INITIATOR:
            await self._dial(host, port)
            # the handshake's QKD key is taken only once the answerer has taken the call
            await self._kme_limits()
            qkd = await self._handshake_keys()
        else:
            await self._listen(host, port, on_listening, accept_timeout)
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
        self.result = result
        self._check_pin(result)
        return EstablishedCall(result, self.transport, self.pqc_only, self._early)

    async def _dial(self, host: str, port: int) -> None:
        """The caller: connect, and check that the right terminal answered."""
        own, peer = self.profile.sae_id, self.profile.peer_sae_id
        t0 = time.monotonic()
        self.phase.advance(CallPhase.CONNECTING)
        self.console.say(f"calling {host}:{port} ...")
        mode = (self.opt.mode or Mode.AES).label
        await self.transport.connect_as_caller(host, port, caller=own, callee=peer, mode=mode)
        self.times.connect_ms = (time.monotonic() - t0) * 1e3
        wrong = check_answerer(self.transport.peer_name, own, peer)
        if wrong is not None:
            raise wrong
        self.phase.advance(CallPhase.HANDSHAKE)
        self.console.say(f"{self.transport.peer_name or 'the answerer'} answered: handshake ...")

    async def _listen(
        self,
        host: str,
        port: int,
        on_listening: Callable[[SignalingListener], None] | None,
        accept_timeout: float | None,
    ) -> None:
        """The answerer: wait for a call, screening each offer, and take the first good one."""
        own, peer = self.profile.sae_id, self.profile.peer_sae_id
        self.phase.advance(CallPhase.LISTENING)

        def listening(listener: SignalingListener) -> None:
            self.console.say(f"waiting for a call on {listener.host}:{listener.port} ...")
            if on_listening is not None:
                on_listening(listener)

        def screen(offer: SignalMessage) -> Refusal | None:
            screened = screen_offer(offer, own, peer, self.opt.mode)
            if screened is None:
                return None
            self.console.say(f"{screened.note}; still waiting for a call")
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
        self.console.say(f"call from {self.transport.peer_name or 'a caller'}: handshake ...")

    # ------------------------------------------------------------------ keys for the handshake
    async def _kme_limits(self) -> None:
        """The caller's KME status, asked once (unless the command line's check before dialing
        gave it): its key sizes and, from a qkd-keyserver node, the key route and relay
        counters the route report starts from."""
        status: KmeStatus | None = self.opt.kme_limits
        if status is None:
            with contextlib.suppress(KmeError):
                status = await self.key_source.status(self.profile.peer_sae_id)
        if status is not None:
            self.route_before = status.status_extension or {}
            self.keys.max_keys_per_request = status.max_key_per_request

    async def _handshake_keys(self) -> list[QkdKey]:
        """The caller's QKD key for the handshake (ETSI 014 enc_keys), or PQC-only fallback."""
        t0 = time.monotonic()
        try:
            return await self.keys.handshake_keys(
                self.opt.call_params().handshake_qkd_bits,
                self.opt.kme_wait,
                lambda: self.console.say("waiting for the QKD link to deliver key ..."),
            )
        except KmeError as exc:
            mode = self.opt.mode or Mode.AES
            if self.opt.allow_pqc_only and mode is Mode.AES:
                self.console.warn(
                    f"no QKD key ({exc}); continuing PQC-only (ML-KEM + X25519) as allowed"
                )
                self.pqc_only = True
                return []
            self.handshake.abort(
                AbortKind.FAILED, "the caller could not get a QKD key from its KME"
            )
            raise no_handshake_key(exc, otp=mode is Mode.OTP) from exc
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
            self.pin_status = self.pins.check(
                result.peer, self.console.say, self.console.warn
            ).value
        except IdentityChanged:
            self.pin_status = PinStatus.CHANGED.value
            self.handshake.abort(AbortKind.IDENTITY_REFUSED, "peer identity changed; call refused")
            raise

    # ------------------------------------------------------------------ when it fails
    def interrupted(self) -> None:
        """An interrupt stopped the set-up: a peer in the handshake is told (before keys exist,
        with an unauthenticated abort)."""
        if self.phase.current is CallPhase.HANDSHAKE:
            self.handshake.abort(AbortKind.FAILED, "the other side hung up during the handshake")

    def callers_mistake(self, exc: Exception) -> bool:
        """A failed set-up that the caller caused, after it reached this answerer: a proposal
        the policy refuses, its abort (Ctrl-C in its handshake), its connection lost.  Not: a
        changed identity (the alarm must be seen), this side's KME, nothing reached us yet."""
        reached = self.phase.current is CallPhase.HANDSHAKE or bool(self.transport.peer_name)
        failure = call_failure(exc, peer_sae_id=self.profile.peer_sae_id, own_sae_id="")
        return reached and not isinstance(failure, IdentityChanged | KeySupplyFailed)

    async def next_caller(self, exc: Exception) -> None:
        """Say why the call was not taken, drop its connection and start afresh."""
        failure = call_failure(
            exc, peer_sae_id=self.profile.peer_sae_id, own_sae_id=self.profile.sae_id
        )
        caller = printable(self.transport.peer_name, 128) or "a caller"
        self.console.say(f"call from {caller} not taken: {failure}")
        with contextlib.suppress(Exception):
            await self.transport.close()
        self.transport = CallTransport(self.opt.transport, self._receive_filter)
        self.handshake = HandshakeDriver(self.transport, self.identity, self.opt.handshake_timeout)
        self._early.clear()
        self.times = SetupTimes()
        self.pqc_only = False
