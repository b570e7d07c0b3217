"""One session between the two modules of a link: both channels, from handshake to close.

What every fidelity's session shares (:class:`PeerSession`); a fidelity's adapter subclasses it
with its block pipeline (:mod:`keyserver.qkd.module`: the physics post-processing,
:mod:`keyserver.qkd.emulatedmodule`: the emulation), the loops that feed it, and what a lost
session discards.

Handshake, in order:

1. The sealed quantum channel's connection nonces and session key
   (:func:`keyserver.qkd.framing.open_sealed_channel`).
2. On the classical channel, ``NONCE_BYTES`` random bytes from each side (its connection
   nonce), then each side's first Wegman-Carter authenticated message
   (:mod:`keyserver.qkd.classicalchannel`): a :class:`~keyserver.qkd.messages.Hello` carrying the
   other's nonce (so an old Hello cannot be replayed into a new session), the link, the sender's
   role and its key stock. A frame that does not open, or a first message that is not a fresh
   Hello of this link, is refused and the wait goes on (a forger cannot end the session).
3. Key-ID agreement: the transmitter's Hello says ``committed_below`` (every block it stored is
   below it) and carries the protocol parameters. The receiver adopts them (the two
   ``distance_km`` must agree), commits its stored blocks below that number and drops the pending
   keys of later blocks, which the transmitter never stored; both stores then hold the same keys
   under the same IDs, whatever crashed when.

A session ends when any of its loops ends: the peer went away or broke the protocol (the session
closes, the transmitter dials again), or the authentication pad ran out (the module's state
becomes ``aborted`` and the link stops for good).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import TYPE_CHECKING, ClassVar, Generic, TypeVar

from keyserver.jsonlog import log
from keyserver.qkd import messages as m
from keyserver.qkd.blocks import adopt_protocol, protocol_json
from keyserver.qkd.classicalchannel import AuthError, AuthKeyExhausted, Opened, Opener, Sealer
from keyserver.qkd.framing import SessionClosed, open_sealed_channel, read_frame
from keyserver.qkd.messages import MessageError
from keyserver.qkd.role import ModuleState, Role
from keyserver.qkd.sealedchannel import ChannelOpener, ChannelSealer, SealError

if TYPE_CHECKING:
    from keyserver.qkd.moduleprocess import ModuleProcess

NONCE_BYTES = 16  # the classical channel's connection nonce
HANDSHAKE_TIMEOUT = 10.0

ModuleT = TypeVar("ModuleT", bound="ModuleProcess")


class PeerSession(Generic[ModuleT]):
    """Both channels to the peer module, from handshake to close.

    A subclass gives its block protocol: ``_on_message`` (a classical-channel message, both
    roles), ``_produce`` (transmitter), ``_consume`` (receiver: the quantum channel), and
    ``_discard`` (what a lost session drops).
    """

    HEARTBEAT_SECONDS: ClassVar[float | None] = None  # the receiver's stock: None, on delivery only
    RECOVERABLE: ClassVar[tuple[type[Exception], ...]] = ()  # end the session, not the process

    def __init__(
        self,
        module: ModuleT,
        creader: asyncio.StreamReader,
        cwriter: asyncio.StreamWriter,
        qreader: asyncio.StreamReader,
        qwriter: asyncio.StreamWriter,
    ) -> None:
        self.m = module
        self.cr, self.cw, self.qr, self.qw = creader, cwriter, qreader, qwriter
        self.sealer = Sealer(module.pad)
        self.opener = Opener(module.pad)
        self.nonce = os.urandom(NONCE_BYTES)
        self.heartbeat_now = asyncio.Event()
        self.qseal: ChannelSealer
        self.qopen: ChannelOpener
        self._closed = False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            for w in (self.cw, self.qw):
                with contextlib.suppress(Exception):
                    w.close()

    # -- the authenticated classical channel ---------------------------------------------------
    def send(self, message: m.Message) -> None:
        if self._closed:
            raise SessionClosed("session closed")
        self.cw.write(self.sealer.seal_parts(m.encode_parts(message), length_prefix=True))

    def _refused(self, error: str) -> None:
        log(self.m.logger, logging.WARNING, "classical_frame_refused", error=error)

    def _open(self, data: bytes) -> tuple[Opened, m.Message] | None:
        """A frame's message, if the frame is authentic, new and well formed (else refused)."""
        try:
            opened = self.opener.open(data)
            return opened, m.decode(opened.payload)
        except (AuthError, MessageError) as e:
            self._refused(str(e))
            return None

    async def _receive(self) -> m.Message:
        """The next authentic message (forged, replayed or malformed frames are refused)."""
        while True:
            got = self._open(await read_frame(self.cr))
            if got is not None:
                self.opener.accept(got[0])
                return got[1]

    async def _first_hello(self) -> m.Hello:
        while True:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                frame = await read_frame(self.cr)
            got = self._open(frame)
            if got is None:
                continue
            opened, msg = got
            if (
                not isinstance(msg, m.Hello)
                or msg.nonce != self.nonce
                or msg.link != self.m.config.link
            ):
                self._refused("first message is not a fresh Hello of this link")
                continue
            self.opener.accept(opened)
            return msg

    async def _classical_loop(self) -> None:
        """Both roles: the peer's messages, in order (a Heartbeat tells its stock)."""
        while True:
            msg = await self._receive()
            if isinstance(msg, m.Heartbeat):
                self.m.peer_stock = msg.stock
                self._peer_stock_told()
            else:
                await self._on_message(msg)
            await self.cw.drain()

    # -- the sealed quantum channel -----------------------------------------------------------
    async def _read_quantum(self) -> bytes:
        """The next quantum-channel frame, opened (a frame that does not open ends the session)."""
        data = await read_frame(self.qr)
        try:
            return self.qopen.open(data)
        except SealError as e:
            raise self._quantum_refused(e) from None

    def _quantum_refused(self, error: Exception) -> SessionClosed:
        log(
            self.m.logger,
            logging.ERROR,
            "quantum_frame_refused",
            error=str(error),
            message="the sealed quantum channel was tampered with: session closed",
        )
        return SessionClosed("quantum frame refused")

    # -- handshake and key-ID agreement --------------------------------------------------------
    async def _handshake(self) -> None:
        mod = self.m
        cfg = mod.config
        self.qseal, self.qopen = await open_sealed_channel(
            self.qr,
            self.qw,
            mod.channel_key,
            cfg.link,
            mod.role is Role.TRANSMITTER,
            HANDSHAKE_TIMEOUT,
        )
        self.cw.write(self.nonce)
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                peer_nonce = await self.cr.readexactly(NONCE_BYTES)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError) as e:
            raise SessionClosed("no handshake") from e
        store = mod.store
        if mod.role is Role.TRANSMITTER:
            last = store.get("last_committed_block", -1)
            self.send(
                m.Hello(
                    cfg.link,
                    Role.TRANSMITTER,
                    peer_nonce,
                    int(last) + 1,
                    store.key_count(),
                    protocol_json(mod.params),
                )
            )
            hello = await self._first_hello()
            if hello.role != Role.RECEIVER:
                raise SessionClosed("peer is not the receiver")
            mod.peer_stock = hello.stock
        else:
            hello = await self._first_hello()
            if hello.role != Role.TRANSMITTER:
                raise SessionClosed("peer is not the transmitter")
            try:
                params = adopt_protocol(cfg.params, hello.protocol)
            except ValueError as e:
                raise SessionClosed(f"bad protocol parameters: {e}") from None
            if abs(params.distance_km - mod.params.distance_km) > 1e-9:
                log(
                    mod.logger,
                    logging.ERROR,
                    "link_mismatch",
                    message="the two modules' distance_km differ: fix one config",
                )
                raise SessionClosed("distance mismatch")
            mod.params = params
            below = hello.committed_below
            await asyncio.to_thread(store.commit_blocks_upto, below - 1)
            for c in store.chunks():
                if c.committed:
                    mod.pad.commit_chunk(c.block)
            dropped = await asyncio.to_thread(store.drop_pending_after, below - 1)
            mod.pad.drop_uncommitted_after(below - 1)
            if dropped:
                log(
                    mod.logger,
                    logging.INFO,
                    "pending_keys_dropped",
                    keys=dropped,
                    reason="the transmitter never stored their block",
                )
            mod.agreed(params)
            self.send(m.Hello(cfg.link, Role.RECEIVER, peer_nonce, 0, store.key_count(), ""))
        await self.cw.drain()

    # -- the session's life --------------------------------------------------------------------
    async def run(self) -> None:
        mod = self.m
        mod.session = self
        tasks: list[asyncio.Task[None]] = []
        try:
            await self._handshake()
            mod.state = ModuleState.RUNNING
            log(mod.logger, logging.INFO, "session_up", role=mod.role, **mod.log_fields())
            tasks.append(asyncio.create_task(self._classical_loop()))
            if mod.role is Role.TRANSMITTER:
                tasks.append(asyncio.create_task(self._produce()))
            else:
                tasks.append(asyncio.create_task(self._consume()))
                tasks.append(asyncio.create_task(self._heartbeat()))
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                self._ended(t.exception())
        except (SessionClosed, TimeoutError, ConnectionError) as e:
            log(mod.logger, logging.INFO, "session_closed", reason=str(e) or type(e).__name__)
        except AuthKeyExhausted:
            mod.state = ModuleState.ABORTED
            log(mod.logger, logging.ERROR, "auth_key_exhausted")
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(BaseException):
                    await t
            self.close()
            await self._discard()
            if mod.session is self:
                mod.session = None
            if mod.state is ModuleState.RUNNING:
                mod.state = ModuleState.CONNECTING

    def _ended(self, exc: BaseException | None) -> None:
        """A loop ended: how (re-raised when it is no session's end but a bug)."""
        mod = self.m
        if exc is None:
            return
        if isinstance(exc, AuthKeyExhausted):
            mod.state = ModuleState.ABORTED
            log(
                mod.logger,
                logging.ERROR,
                "auth_key_exhausted",
                message="no authentication key left: the link stops",
            )
        elif isinstance(exc, SessionClosed):
            log(mod.logger, logging.INFO, "session_closed", reason=str(exc))
        elif isinstance(exc, self.RECOVERABLE):
            log(mod.logger, logging.WARNING, "session_protocol_error", error=str(exc))
        else:
            raise exc

    async def _heartbeat(self) -> None:
        """The receiver's stock, after each delivery (and every ``HEARTBEAT_SECONDS``)."""
        period = self.HEARTBEAT_SECONDS
        while True:
            if period is None:
                await self.heartbeat_now.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(period):
                        await self.heartbeat_now.wait()
            self.heartbeat_now.clear()
            self.send(m.Heartbeat(self.m.store.key_count()))
            await self.cw.drain()

    # -- what a fidelity gives -----------------------------------------------------------------
    async def _on_message(self, msg: m.Message) -> None:
        """A message of the fidelity's block protocol (anything else: raise SessionClosed)."""
        raise NotImplementedError

    def _peer_stock_told(self) -> None:
        """A Heartbeat updated ``peer_stock``."""

    async def _produce(self) -> None:
        raise NotImplementedError

    async def _consume(self) -> None:
        raise NotImplementedError

    async def _discard(self) -> None:
        """The session is lost: drop the blocks in flight (they were stored by neither side)."""
        raise NotImplementedError
