"""Drives the sans-I/O hybrid handshake (core ``Initiator``/``Responder``) over the control channel.

The caller runs :meth:`HandshakeDriver.initiate`, the answerer :meth:`HandshakeDriver.respond`
(which resolves the caller's QKD key IDs through the given function, i.e. its KME).  When this
side fails the handshake, for whatever reason (a refusal, a parser or crypto-library error, a
KME client error, a bug), the handshake object drops its keys, the peer gets an
:class:`~qphone.core.abort.Abort` saying why, and a :class:`HandshakeFailed` (or a
:class:`~qphone.endpoint.outcome.CallFailed`) is raised: nothing escapes as a raw exception.
When an abort arrives instead of a handshake message, :class:`PeerAborted` is raised (in
neutral words: it is not authenticated).  Nothing is retried.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Awaitable, Callable, Sequence

from qphone.core.abort import Abort, AbortKind, decode_abort, is_abort
from qphone.core.callparams import CallParams
from qphone.core.errors import HandshakeFailed, ProposalRefused
from qphone.core.events import HandshakeComplete, ResolveQkdKeys, SendControl
from qphone.core.handshake import HandshakeResult, Initiator, Responder, ResponderPolicy
from qphone.core.identity import Identity, PublicIdentity
from qphone.core.qkd import QkdKey
from qphone.endpoint.outcome import KeySupplyFailed, PeerAborted, abort_kind, key_supply_failure
from qphone.endpoint.policy import caller_fix
from qphone.kmeclient import KmeError
from qphone.transport.calltransport import CallTransport
from qphone.transport.errors import TransportError

HANDSHAKE_TIMEOUT = 15.0

ResolveKeys = Callable[[Sequence[uuid.UUID]], Awaitable[list[QkdKey]]]


class HandshakeDriver:
    def __init__(
        self, transport: CallTransport, identity: Identity, timeout: float = HANDSHAKE_TIMEOUT
    ) -> None:
        self._transport = transport
        self._identity = identity
        self._timeout = timeout

    def abort(self, kind: AbortKind, reason: str) -> None:
        """Tell the peer this side is failing the call (best effort, never raises)."""
        with contextlib.suppress(Exception):
            self._transport.send_control(Abort(kind, reason).encode())

    async def _receive(self) -> bytes:
        try:
            data = await self._transport.recv_control(timeout=self._timeout)
        except TimeoutError as exc:
            raise HandshakeFailed("the peer did not answer the handshake in time") from exc
        if is_abort(data):
            raise PeerAborted(decode_abort(data), "handshake")
        return data

    async def initiate(
        self,
        params: CallParams,
        qkd_keys: Sequence[QkdKey],
        expected_peer: PublicIdentity | None,
    ) -> HandshakeResult:
        """Caller: ClientHello, ServerHello, ClientFinish."""
        transport = self._transport
        ini: Initiator | None = None
        try:
            ini = Initiator(
                self._identity, params, qkd_keys, transport.channel_binding(), expected_peer
            )
            transport.send_control(ini.start())
            events = ini.receive(await self._receive())
            for ev in events:
                if isinstance(ev, SendControl):
                    transport.send_control(ev.data)
                elif isinstance(ev, HandshakeComplete):
                    return ev.result
            raise HandshakeFailed("handshake ended without a result")
        except Exception as exc:
            if ini is not None and not ini.closed:
                with contextlib.suppress(HandshakeFailed):
                    ini.fail(str(exc))
            failure = self._failed(exc)
            if failure is exc:
                raise
            raise failure from exc

    async def respond(self, policy: ResponderPolicy, resolve: ResolveKeys) -> HandshakeResult:
        """Answerer: resolve the caller's QKD key IDs with ``resolve`` and complete."""
        res: Responder | None = None
        try:
            res = Responder(self._identity, self._transport.channel_binding(), policy)
            events = res.receive(await self._receive())
            while True:
                for ev in events:
                    if isinstance(ev, HandshakeComplete):
                        return ev.result
                    if isinstance(ev, SendControl):
                        self._transport.send_control(ev.data)
                nxt = events[0] if events else None
                if isinstance(nxt, ResolveQkdKeys):
                    events = res.provide_qkd_keys(await self._resolve(res, resolve, nxt))
                    continue
                events = res.receive(await self._receive())
        except ProposalRefused as exc:  # the caller is told which of its options to change
            if res is not None and not res.closed:
                with contextlib.suppress(HandshakeFailed):
                    res.fail(str(exc))
            self.abort(AbortKind.POLICY_REFUSED, caller_fix(exc, policy))
            raise
        except Exception as exc:
            if res is not None and not res.closed:
                with contextlib.suppress(HandshakeFailed):
                    res.fail(str(exc))
            failure = self._failed(exc)
            if failure is exc:
                raise
            raise failure from exc

    def _failed(self, exc: Exception) -> Exception:
        """What to raise for ``exc``; tells the peer unless it knows already (or is gone)."""
        if isinstance(exc, PeerAborted | KeySupplyFailed | TransportError):
            return exc  # the peer aborted; or this side's abort was sent; or nobody to tell
        if isinstance(exc, HandshakeFailed):
            self.abort(abort_kind(exc), str(exc))
            return exc
        failure = HandshakeFailed(f"handshake failed: {type(exc).__name__}: {exc}")
        self.abort(AbortKind.FAILED, str(failure))
        return failure

    async def _resolve(
        self, res: Responder, resolve: ResolveKeys, need: ResolveQkdKeys
    ) -> list[QkdKey]:
        try:
            return await resolve(need.key_ids)
        except KmeError as exc:
            reason = f"the answering side's KME could not resolve the QKD keys: {exc}"
            with contextlib.suppress(HandshakeFailed):
                res.fail(reason)
            self.abort(AbortKind.FAILED, reason)
            failure: KeySupplyFailed = key_supply_failure(reason, exc)
            raise failure from exc
