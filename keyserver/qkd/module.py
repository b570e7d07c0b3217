"""One QKD module process (``qkd-keyserver module --config FILE``): the asyncio adapter.

It moves bytes and nothing else: quantum-channel frames (the simulated fibre) and authenticated
classical-channel frames between the two modules, into and out of the sans-I/O machines of
:mod:`keyserver.qkd.postprocessing`; it makes blocks durable in :mod:`keyserver.qkd.store` before
the protocol goes on, paces the source in real time, and serves the northbound ETSI 014 API
(:mod:`keyserver.qkd.northbound`). The receiver listens on both channel addresses, the
transmitter connects to them. Both connections form one session; if either breaks, the blocks in
progress are discarded by both and the transmitter reconnects.

Wire: each channel carries frames as ``u32 length || bytes`` (quantum channel: photon records,
:func:`keyserver.qkd.quantumchannel.encode_frame`; classical channel: WC-authenticated messages,
:mod:`keyserver.qkd.classicalchannel`). The classical session opens with 16 random bytes from
each side (the connection nonces); each side's first authenticated message is its Hello carrying
the other's nonce.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections import deque
from typing import Any

from keyserver.etsi014.server import HttpLimits, Listener, start_server
from keyserver.jsonlog import log
from keyserver.pki.tls import server_context
from keyserver.qkd import messages as m
from keyserver.qkd.classicalchannel import (
    AuthError,
    AuthKeyExhausted,
    AuthPad,
    Opener,
    Sealer,
    split_initial_key,
)
from keyserver.qkd.config import ModuleConfig
from keyserver.qkd.finitekey import optimised
from keyserver.qkd.framing import SessionClosed, length_prefixed, open_sealed_channel, read_frame
from keyserver.qkd.linkstatus import LinkStatus
from keyserver.qkd.messages import MessageError
from keyserver.qkd.northbound import ModuleKeyService, build_app
from keyserver.qkd.postprocessing import (
    Alice,
    BlockAborted,
    BlockCommitted,
    BlockStats,
    Bob,
    Output,
    ProtocolError,
    Send,
    StoreBlock,
    adopt_protocol,
    protocol_json,
)
from keyserver.qkd.quantumchannel import (
    Detector,
    Fibre,
    QuantumChannelError,
    QuantumFrame,
    decode_frame,
    encode_frame,
)
from keyserver.qkd.randomness import RandomSource, nature
from keyserver.qkd.role import ModuleState, Role
from keyserver.qkd.sealedchannel import SealError, read_channel_key
from keyserver.qkd.store import ModuleStore

_LOG = logging.getLogger("keyserver.qkd.module")
NONCE_BYTES = 16
HANDSHAKE_TIMEOUT = 10.0
HEARTBEAT_SECONDS = 2.0
IDLE_POLL_SECONDS = 1.0  # an idle source re-checks at least this often (else woken by events)
RESUME_FRACTION = 0.8
MAX_IN_FLIGHT = 2  # blocks sent but not yet finished by post-processing


QUICK_RANGES = 4096  # parity requests / answers up to this size are handled on the event loop


def _quick(msg: m.Message) -> bool:
    """Messages whose handling is cheap enough to run without a worker thread: Cascade rounds
    with few ranges (no pass start, no new group), and the commit protocol's small messages."""
    if isinstance(msg, m.ParityRequest):
        return msg.start_block == 0 and msg.round > 0 and len(msg.passes) <= QUICK_RANGES
    if isinstance(msg, m.ParityAnswer):
        return msg.count <= QUICK_RANGES
    return isinstance(msg, m.Commit | m.Confirm | m.Abort)


class Module:
    """One QKD module. ``await start()``, then ``await stop()``; ``failed`` on fatal errors."""

    def __init__(self, config: ModuleConfig) -> None:
        self.config = config
        self.role = Role(config.role)
        self.failed = asyncio.Event()
        self.state = ModuleState.CONNECTING
        self.port = config.northbound.port
        self.quantum_port = config.quantum_port
        self.classical_port = config.classical_port
        self._tasks: list[asyncio.Task[None]] = []
        self._listener: Listener | None = None
        self._servers: list[asyncio.base_events.Server] = []
        self._lock = asyncio.Lock()
        self._session_lock = asyncio.Lock()
        self._peer_stock = 0
        self._paused = False
        self._probe = False  # run one block even at a full stock (Eve was just set)
        self._session: _Session | None = None
        self._block_seconds: dict[int, float] = {}
        self._pending_classical: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._pending_quantum: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.wake = asyncio.Event()  # stock or blocks in flight changed: an idle source looks

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.config
        try:
            key = cfg.initial_auth_key.read_bytes()
        except OSError as e:
            raise ValueError(
                f"[classical_channel] initial_auth_key: cannot read "
                f"{cfg.initial_auth_key}: {e.strerror}"
            ) from None
        halves = split_initial_key(key)
        self.channel_key = read_channel_key(cfg.channel_key)
        self.store = ModuleStore(cfg.data_dir)
        self.store.init_auth(*halves)
        send_dir = 0 if self.role is Role.TRANSMITTER else 1
        self.pad = AuthPad(
            self.role, self.store.chunks(), self.store.reservation(send_dir), self.store
        )
        self.status = LinkStatus.from_json(self.store.get("link_status"))
        self.random = RandomSource(cfg.seed, f"{cfg.link}/{self.role}".encode())
        if cfg.seeded:
            log(
                _LOG,
                logging.WARNING,
                "seeded_source",
                module=cfg.id,
                message="SEEDED SOURCE: keys are reproducible and NOT secret (testing = true)",
            )
        if self.role is Role.TRANSMITTER:
            self.params = await asyncio.to_thread(optimised, cfg.params)
            self.fibre = Fibre(self.params, nature(cfg.seed, b"fibre"))
            self.machine: Alice | Bob = Alice(
                self.params, cfg.link, cfg.northbound.key_size, self.random
            )
        else:
            self.params = dataclasses.replace(cfg.params, optimise=False)
            self.detector = Detector(self.params, nature(cfg.seed, b"detector"))
            self.machine = Bob(self.params, cfg.link, cfg.northbound.key_size, self.random)
        service = ModuleKeyService(cfg, self.store, self.status_extension, self._on_delivered)
        app, self.api = build_app(
            service, cfg, self._set_eve if self.role is Role.TRANSMITTER else None
        )
        nb = cfg.northbound
        self._listener = await start_server(
            app, nb.host, nb.port, server_context(nb.ca_cert, nb.cert, nb.key), HttpLimits()
        )
        self.port = self._listener.port
        if self.role is Role.RECEIVER:
            qs = await asyncio.start_server(
                self._accept_quantum, cfg.quantum_host, cfg.quantum_port
            )
            cs = await asyncio.start_server(
                self._accept_classical, cfg.classical_host, cfg.classical_port
            )
            self._servers = [qs, cs]
            self.quantum_port = int(qs.sockets[0].getsockname()[1])
            self.classical_port = int(cs.sockets[0].getsockname()[1])
        else:
            self._spawn(self._transmitter_loop())
        log(
            _LOG,
            logging.INFO,
            "module_started",
            module=cfg.id,
            link=cfg.link,
            role=self.role,
            northbound_port=self.port,
            distance_km=self.params.distance_km,
            seeded_source=cfg.seeded,
            block_pulses=self.params.block_pulses,
        )

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.append(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log(_LOG, logging.ERROR, "task_failed", error=repr(exc))
            self.failed.set()

    async def stop(self) -> None:
        self.state = ModuleState.STOPPED
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._session is not None:
            self._session.close()
        for s in self._servers:
            s.close()
        if self._listener is not None:
            await self._listener.cleanup()
        self._save_status()
        self.store.close()
        self.channel_key[:] = bytes(len(self.channel_key))

    # -- status -----------------------------------------------------------------------------
    def status_extension(self) -> dict[str, Any]:
        st = self.status
        send_dir = self.pad.send_direction
        recv_pos = self._session.opener.next_position if self._session else 0
        return {
            "link": self.config.link,
            "role": self.role,
            "fidelity": "physics",
            "state": self.state,
            "qber": st.qber,
            "qber_ewma": st.qber_ewma,
            "key_rate_bps": st.key_rate_bps,
            "eavesdropper_alarm": st.eavesdropper_alarm,
            "blocks_ok": st.blocks_ok,
            "blocks_aborted": st.blocks_aborted,
            "last_abort_reason": st.last_abort_reason,
            "secret_bits_total": st.secret_bits_total,
            "auth_key_bits_available": self.pad.available_bits(recv_pos),
            "auth_bits_consumed": 8 * self.pad.consumed_bytes,
            "seeded_source": self.config.seeded,
            "distance_km": self.params.distance_km,
            "eve_fraction": self.fibre.eve_fraction if self.role is Role.TRANSMITTER else None,
            "block_pulses": self.params.block_pulses,
            "stored_keys": self.store.key_count(),
            "auth_send_position": self.pad.send_pos,
            "auth_direction": send_dir,
        }

    def _save_status(self) -> None:
        with contextlib.suppress(Exception):
            self.store.put("link_status", self.status.to_json())

    def _set_eve(self, fraction: float) -> float:
        self.fibre.eve_fraction = fraction
        log(_LOG, logging.WARNING, "eavesdropper_set", fraction=fraction)
        # a full stock pauses production: run one block anyway, so the alarm shows within a
        # block time (the emulated fidelity runs test blocks all the time instead)
        self._probe = True
        self.wake.set()
        return fraction

    def _on_delivered(self) -> None:
        self.wake.set()
        if self.role is Role.RECEIVER and self._session is not None:
            self._session.heartbeat_now.set()

    # -- sessions ---------------------------------------------------------------------------
    async def _transmitter_loop(self) -> None:
        cfg = self.config
        delay = 0.2
        while True:
            try:
                cr, cw = await asyncio.open_connection(cfg.classical_host, cfg.classical_port)
                try:
                    qr, qw = await asyncio.open_connection(cfg.quantum_host, cfg.quantum_port)
                except OSError:
                    cw.close()
                    raise
            except OSError:
                if self.state is not ModuleState.ABORTED:
                    self.state = ModuleState.CONNECTING
                await asyncio.sleep(delay)
                delay = min(delay * 1.5, 2.0)
                continue
            delay = 0.2
            session = _Session(self, cr, cw, qr, qw)
            await session.run()
            if self.state is ModuleState.ABORTED:
                return

    async def _accept_classical(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._pending_classical = (reader, writer)
        await self._maybe_session()

    async def _accept_quantum(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._pending_quantum = (reader, writer)
        await self._maybe_session()

    async def _maybe_session(self) -> None:
        c = self._pending_classical
        q = self._pending_quantum
        if c is None or q is None:
            return
        self._pending_classical = None
        self._pending_quantum = None
        if self._session is not None:
            self._session.close()
        async with self._session_lock:
            session = _Session(self, c[0], c[1], q[0], q[1])
            await session.run()

    # -- block events -----------------------------------------------------------------------
    async def handle(self, session: _Session, outs: list[Output]) -> None:
        queue = deque(outs)
        while queue:
            o = queue.popleft()
            if isinstance(o, Send):
                session.send(o.message)
            elif isinstance(o, StoreBlock):
                committed = self.role is Role.TRANSMITTER
                await asyncio.to_thread(
                    self.store.store_block,
                    o.block,
                    o.keys,
                    (o.refill_to_receiver, o.refill_to_transmitter),
                    committed,
                )
                if o.refill_to_receiver or o.refill_to_transmitter:
                    self.pad.add_chunk_loaded(
                        o.block, o.refill_to_receiver, o.refill_to_transmitter, committed
                    )
                if self.role is Role.RECEIVER:
                    assert isinstance(self.machine, Bob)
                    self.machine.stock = self.store.key_count()
                    self._bob_stats = o.stats
                queue.extend(self.machine.stored(o.block))
            elif isinstance(o, BlockAborted):
                self.wake.set()
                self._record(o.stats)
                level = logging.WARNING
                log(
                    _LOG,
                    level,
                    "block_aborted",
                    block=o.block,
                    reason=o.reason.label,
                    qber_x=round(o.stats.qber_x, 5),
                )
            elif isinstance(o, BlockCommitted):
                self.wake.set()
                if self.role is Role.RECEIVER:
                    await asyncio.to_thread(self.store.commit_blocks_upto, o.block)
                    self.pad.commit_chunk(o.block)
                    stats = getattr(self, "_bob_stats", None)
                    if stats is not None and stats.block == o.block:
                        self._record(stats)
                else:
                    if o.stats is not None:
                        self._record(o.stats)
                        self.machine_used_auth()
                        log(
                            _LOG,
                            logging.INFO,
                            "block_ok",
                            block=o.block,
                            secret_bits=o.stats.secret_bits,
                            qber=round(o.stats.qber, 5),
                            ec_efficiency=round(o.stats.ec_efficiency, 4),
                            keys=o.stats.key_bits_delivered // self.config.northbound.key_size,
                        )

    def _record(self, stats: BlockStats) -> None:
        seconds = stats.pulses / self.params.clock_hz if stats.pulses else 0.0
        self.status.record(stats, seconds)
        self._save_status()

    def machine_used_auth(self) -> None:
        assert isinstance(self.machine, Alice)
        blocks = max(self.status.blocks_ok + self.status.blocks_aborted, 1)
        self.machine.auth_used_per_block = self.pad.consumed_bytes // blocks
        recv_pos = self._session.opener.next_position if self._session else 0
        self.machine.auth_available = (
            self.pad.available_bytes(0),
            max(self.pad.available_bytes(1) - recv_pos, 0),
        )

    # -- stock ------------------------------------------------------------------------------
    def production_paused(self) -> bool:
        if self._probe:
            return False
        cap = self.config.northbound.max_key_count
        stock = max(self.store.key_count(), self._peer_stock)
        if self._paused:
            self._paused = stock >= RESUME_FRACTION * cap
        else:
            self._paused = stock >= cap
        return self._paused


class _Session:
    """Both channels to the peer module, from handshake to close."""

    def __init__(
        self,
        module: Module,
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
        self._closed = False
        self.refused = 0

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            for w in (self.cw, self.qw):
                with contextlib.suppress(Exception):
                    w.close()

    def send(self, message: m.Message) -> None:
        if self._closed:
            raise SessionClosed("session closed")
        self.cw.write(self.sealer.seal_parts(m.encode_parts(message), length_prefix=True))

    async def _receive(self) -> m.Message:
        """The next authentic message (forged, replayed or malformed frames are refused)."""
        while True:
            data = await read_frame(self.cr)
            try:
                opened = self.opener.open(data)
                message = m.decode(opened.payload)
            except (AuthError, MessageError) as e:
                self.refused += 1
                log(_LOG, logging.WARNING, "classical_frame_refused", error=str(e))
                continue
            return self._accepted(opened, message)

    def _accepted(self, opened: Any, message: m.Message) -> m.Message:
        self.opener.accept(opened)
        return message

    async def _handshake(self) -> None:
        cfg = self.m.config
        self.qseal, self.qopen = await open_sealed_channel(
            self.qr,
            self.qw,
            self.m.channel_key,
            cfg.link,
            self.m.role is Role.TRANSMITTER,
            HANDSHAKE_TIMEOUT,
        )
        self.cw.write(self.nonce)
        try:
            peer_nonce = await asyncio.wait_for(self.cr.readexactly(NONCE_BYTES), HANDSHAKE_TIMEOUT)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError) as e:
            raise SessionClosed("no handshake") from e
        store = self.m.store
        if self.m.role is Role.TRANSMITTER:
            last = store.get("last_committed_block", -1)
            self.send(
                m.Hello(
                    cfg.link,
                    Role.TRANSMITTER,
                    peer_nonce,
                    int(last) + 1,
                    store.key_count(),
                    protocol_json(self.m.params),
                )
            )
            hello = await self._first_hello()
            if hello.role != Role.RECEIVER:
                raise SessionClosed("peer is not the receiver")
            self.m._peer_stock = hello.stock
        else:
            hello = await self._first_hello()
            if hello.role != Role.TRANSMITTER:
                raise SessionClosed("peer is not the transmitter")
            try:
                params = adopt_protocol(self.m.config.params, hello.protocol)
            except ValueError as e:
                raise SessionClosed(f"bad protocol parameters: {e}") from None
            if abs(params.distance_km - self.m.params.distance_km) > 1e-9:
                log(
                    _LOG,
                    logging.ERROR,
                    "link_mismatch",
                    message="the two modules' distance_km differ: fix one config",
                )
                raise SessionClosed("distance mismatch")
            self.m.params = params
            assert isinstance(self.m.machine, Bob)
            self.m.machine.params = params
            self.m.detector.params = params
            below = hello.committed_below
            await asyncio.to_thread(store.commit_blocks_upto, below - 1)
            for c in store.chunks():
                if c.committed:
                    self.m.pad.commit_chunk(c.block)
            dropped = await asyncio.to_thread(store.drop_pending_after, below - 1)
            self.m.pad.drop_uncommitted_after(below - 1)
            if dropped:
                log(
                    _LOG,
                    logging.INFO,
                    "pending_keys_dropped",
                    keys=dropped,
                    reason="the transmitter never stored their block",
                )
            self.m.machine.stock = store.key_count()
            self.send(m.Hello(cfg.link, Role.RECEIVER, peer_nonce, 0, store.key_count(), ""))
        await self.cw.drain()

    async def _first_hello(self) -> m.Hello:
        while True:
            data = await asyncio.wait_for(read_frame(self.cr), HANDSHAKE_TIMEOUT)
            try:
                opened = self.opener.open(data)
                msg = m.decode(opened.payload)
            except (AuthError, MessageError) as e:
                self.refused += 1
                log(_LOG, logging.WARNING, "classical_frame_refused", error=str(e))
                continue
            if (
                not isinstance(msg, m.Hello)
                or msg.nonce != self.nonce
                or msg.link != self.m.config.link
            ):
                self.refused += 1
                log(
                    _LOG,
                    logging.WARNING,
                    "classical_frame_refused",
                    error="first message is not a fresh Hello of this link",
                )
                continue
            self.opener.accept(opened)
            return msg

    async def run(self) -> None:
        mod = self.m
        mod._session = self
        tasks: list[asyncio.Task[None]] = []
        try:
            await self._handshake()
            mod.state = ModuleState.RUNNING
            log(_LOG, logging.INFO, "session_up", role=mod.role)
            tasks.append(asyncio.create_task(self._classical_loop()))
            if mod.role is Role.TRANSMITTER:
                tasks.append(asyncio.create_task(self._produce()))
            else:
                tasks.append(asyncio.create_task(self._consume()))
                tasks.append(asyncio.create_task(self._heartbeat()))
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                exc = t.exception()
                if exc is not None and not isinstance(exc, SessionClosed):
                    if isinstance(exc, AuthKeyExhausted):
                        mod.state = ModuleState.ABORTED
                        log(
                            _LOG,
                            logging.ERROR,
                            "auth_key_exhausted",
                            message="no authentication key left: the link stops",
                        )
                    elif isinstance(exc, ProtocolError | QuantumChannelError):
                        log(_LOG, logging.WARNING, "session_protocol_error", error=str(exc))
                    else:
                        raise exc
        except (SessionClosed, TimeoutError, ConnectionError) as e:
            log(_LOG, logging.INFO, "session_closed", reason=str(e) or type(e).__name__)
        except AuthKeyExhausted:
            mod.state = ModuleState.ABORTED
            log(_LOG, logging.ERROR, "auth_key_exhausted")
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(BaseException):
                    await t
            self.close()
            async with mod._lock:
                outs = mod.machine.reset()
            for o in outs:
                if isinstance(o, BlockAborted):
                    mod._record(o.stats)
            if mod._session is self:
                mod._session = None
            if mod.state is ModuleState.RUNNING:
                mod.state = ModuleState.CONNECTING

    async def _classical_loop(self) -> None:
        mod = self.m
        while True:
            msg = await self._receive()
            if isinstance(msg, m.Heartbeat):
                mod._peer_stock = msg.stock
                mod.wake.set()
                continue
            if isinstance(msg, m.Hello):
                raise SessionClosed("unexpected Hello")
            if isinstance(msg, m.Confirm):
                mod._peer_stock = msg.stock
            async with mod._lock:
                if _quick(msg):  # a few ms at most: a thread hand-off would cost more
                    outs = mod.machine.receive(msg)
                else:
                    outs = await asyncio.to_thread(mod.machine.receive, msg)
                await mod.handle(self, outs)
            await self.cw.drain()

    async def _heartbeat(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.heartbeat_now.wait(), HEARTBEAT_SECONDS)
            self.heartbeat_now.clear()
            self.send(m.Heartbeat(self.m.store.key_count()))
            await self.cw.drain()

    async def _produce(self) -> None:
        mod = self.m
        alice = mod.machine
        assert isinstance(alice, Alice)
        p = mod.params
        deadline = time.monotonic()
        while True:
            while True:
                mod.wake.clear()
                if not (
                    mod.production_paused() or len(alice.blocks_in_progress()) >= MAX_IN_FLIGHT
                ):
                    break
                # stock full, or post-processing behind the link: the source idles until a
                # delivery, a finished block or the peer's stock wakes it (or the poll interval)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(mod.wake.wait(), IDLE_POLL_SECONDS)
                deadline = time.monotonic()
            mod._probe = False
            block = int(mod.store.get("next_block", 0))
            mod.store.put("next_block", block + 1)
            async with mod._lock:
                src = alice.source_for(block)
            offset = 0
            frame = 0
            while offset < p.block_pulses:
                pulses = min(p.frame_pulses, p.block_pulses - offset)
                deadline = max(deadline, time.monotonic() - 1.0) + pulses / p.clock_hz
                delay = deadline - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                record, photons = await asyncio.to_thread(mod.fibre.transmit, pulses, src)
                async with mod._lock:
                    alice.on_frame(block, frame, offset, pulses, record)
                last = offset + pulses >= p.block_pulses
                plain = encode_frame(QuantumFrame(block, frame, pulses, last, photons))
                self.qw.write(length_prefixed(self.qseal.seal(plain)))
                await self.qw.drain()
                offset += pulses
                frame += 1

    async def _consume(self) -> None:
        mod = self.m
        bob = mod.machine
        assert isinstance(bob, Bob)
        current = -1
        expected_frame = 0
        offset = 0
        while True:
            try:
                data = self.qopen.open(await read_frame(self.qr))
            except SealError as e:
                log(
                    _LOG,
                    logging.ERROR,
                    "quantum_frame_refused",
                    error=str(e),
                    message="the sealed quantum channel was tampered with: session closed",
                )
                raise SessionClosed("quantum frame refused") from None
            frame = decode_frame(data)
            if frame.block != current:
                if frame.frame != 0 or frame.block < current:
                    raise QuantumChannelError("quantum frames out of order")
                current, expected_frame, offset = frame.block, 0, 0
            if frame.frame != expected_frame:
                raise QuantumChannelError("quantum frames out of order")
            det = await asyncio.to_thread(
                mod.detector.detect, frame.photons, frame.pulses, bob.basis_source(frame.block)
            )
            async with mod._lock:
                outs = bob.on_frame(frame.block, frame.frame, offset, frame.pulses, det, frame.last)
                await mod.handle(self, outs)
            await self.cw.drain()
            offset += frame.pulses
            expected_frame += 1
