"""One emulated QKD module (``fidelity = "emulated"``): the asyncio adapter of
:mod:`keyserver.qkd.emulation`, with the physics module's northbound API, store, key IDs and
authenticated classical channel.

Per block (every ``block_pulses / clock_hz`` seconds of real time, the link's cadence) the
transmitter samples the block's outcome; if it yields key, it draws the key from the OS CSPRNG
and sends it to the receiver over the **sealed** quantum channel
(:mod:`keyserver.qkd.sealedchannel`). On the Wegman-Carter authenticated classical channel
(:mod:`keyserver.qkd.classicalchannel`) it sends only the block's public report
(:class:`~keyserver.qkd.messages.BlockReport`); the receiver recomputes the decision and the
secret length from the counts, stores the block and confirms (``Confirm``); the transmitter stores
and commits (``Commit``), the same commit protocol as the physics pair.

Blocks keep running while the key stock is full (*test blocks*: the statistics feed the alarm,
the key is discarded, except the authentication refill the pad needs), so an eavesdropper shows
within about one block. Idle means one block per block time and nothing in between: no polling.
This module imports no numpy, numba or scipy (a lean process, docs/network.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import logging
import math
import os
import random
import time
from typing import Any

from keyserver.etsi014.server import HttpLimits, Listener, start_server
from keyserver.jsonlog import log
from keyserver.pki.tls import server_context
from keyserver.qkd import messages as m
from keyserver.qkd.blocks import (
    TAG_BITS,
    BlockStats,
    adopt_protocol,
    protocol_json,
    refill_bits,
    split_key,
)
from keyserver.qkd.classicalchannel import (
    AuthError,
    AuthKeyExhausted,
    AuthPad,
    Opener,
    Sealer,
    split_initial_key,
)
from keyserver.qkd.config import ModuleConfig
from keyserver.qkd.emulation import (
    BlockOutcome,
    KeyFrameError,
    ReportError,
    block_schedule,
    check_report,
    decode_key_frame,
    encode_key_frame,
    report,
    sample_block,
)
from keyserver.qkd.finitekey import optimised
from keyserver.qkd.framing import SessionClosed, length_prefixed, open_sealed_channel, read_frame
from keyserver.qkd.linkstatus import LinkStatus
from keyserver.qkd.messages import AbortReason, MessageError
from keyserver.qkd.northbound import ModuleKeyService, build_app
from keyserver.qkd.physics import binary_entropy
from keyserver.qkd.role import ModuleState, Role
from keyserver.qkd.sealedchannel import SealError, read_channel_key
from keyserver.qkd.store import ModuleStore

_LOG = logging.getLogger("keyserver.qkd.emulatedmodule")
NONCE_BYTES = 16
HANDSHAKE_TIMEOUT = 10.0
KEY_FRAME_TIMEOUT = 30.0  # a report waits this long for its block's key frame
RESUME_FRACTION = 0.8
MAX_IN_FLIGHT = 2  # blocks reported with key but not yet confirmed


def release_memory() -> None:
    """Give freed heap back to the OS (glibc ``malloc_trim``; elsewhere nothing): a block's key
    passes through briefly, and a lean process should not keep its peak."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _nature(seed: int | None, label: str) -> random.Random:
    """The generator of simulated nature: the OS CSPRNG, or (testing) a seeded PRNG."""
    if seed is None:
        return random.SystemRandom()
    return random.Random(f"qphone-emulated-nature/{seed}/{label}")


def _stats(o: BlockOutcome, refill: int, key_bits: int) -> BlockStats:
    n = int(o.counts.total_z)
    h = binary_entropy(o.qber)
    cascade = max(o.leaked_bits - TAG_BITS, 0)
    return BlockStats(
        block=o.block,
        pulses=o.pulses,
        detections=n + int(sum(o.counts.n_x)),
        n_z=tuple(int(v) for v in o.counts.n_z),  # type: ignore[arg-type]
        n_x=tuple(int(v) for v in o.counts.n_x),  # type: ignore[arg-type]
        m_x=tuple(int(v) for v in o.counts.m_x),  # type: ignore[arg-type]
        qber=o.qber if not o.aborted else o.qber_x,
        qber_x=o.qber_x,
        cascade_leak=cascade,
        verification_leak=TAG_BITS if o.leaked_bits else 0,
        secret_bits=o.secret_bits,
        key_bits_delivered=key_bits,
        auth_refill_bits=refill,
        ec_efficiency=cascade / (n * h) if n and h > 0 else 0.0,
        phase_error=o.phase_error,
        aborted=o.aborted,
        reason=o.reason,
    )


class EmulatedModule:
    """One emulated QKD module. ``await start()``, then ``await stop()``."""

    def __init__(self, config: ModuleConfig) -> None:
        self.config = config
        self.role = Role(config.role)
        self.failed = asyncio.Event()
        self.state = ModuleState.CONNECTING
        self.port = config.northbound.port
        self.quantum_port = config.quantum_port
        self.classical_port = config.classical_port
        self.eve_fraction = config.params.eve_fraction
        self._tasks: list[asyncio.Task[None]] = []
        self._listener: Listener | None = None
        self._servers: list[asyncio.base_events.Server] = []
        self._session: _Session | None = None
        self._peer_stock = 0
        self._paused = False
        self._pending: dict[str, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}
        self._session_lock = asyncio.Lock()

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
        self.nature = _nature(cfg.seed, f"{cfg.link}/{self.role}")
        self._key_random = random.Random(f"qphone-emulated-key/{cfg.seed}") if cfg.seeded else None
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
        else:
            self.params = dataclasses.replace(cfg.params, optimise=False)
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
                self._accept("quantum"), cfg.quantum_host, cfg.quantum_port
            )
            cs = await asyncio.start_server(
                self._accept("classical"), cfg.classical_host, cfg.classical_port
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
            fidelity="emulated",
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

    # -- status ------------------------------------------------------------------------------
    def status_extension(self) -> dict[str, Any]:
        st = self.status
        recv_pos = self._session.opener.next_position if self._session else 0
        return {
            "link": self.config.link,
            "role": self.role,
            "fidelity": "emulated",
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
            "eve_fraction": self.eve_fraction if self.role is Role.TRANSMITTER else None,
            "block_pulses": self.params.block_pulses,
            "stored_keys": self.store.key_count(),
            "auth_send_position": self.pad.send_pos,
            "auth_direction": self.pad.send_direction,
        }

    def _save_status(self) -> None:
        with contextlib.suppress(Exception):
            self.store.put("link_status", self.status.to_json())

    def record(self, stats: BlockStats) -> None:
        self.status.record(stats, stats.pulses / self.params.clock_hz)
        self._save_status()

    def _set_eve(self, fraction: float) -> float:
        self.eve_fraction = fraction
        log(_LOG, logging.WARNING, "eavesdropper_set", fraction=fraction)
        return fraction

    def _on_delivered(self) -> None:
        if self.role is Role.RECEIVER and self._session is not None:
            self._session.heartbeat_now.set()

    def production_paused(self) -> bool:
        cap = self.config.northbound.max_key_count
        stock = max(self.store.key_count(), self._peer_stock)
        if self._paused:
            self._paused = stock >= RESUME_FRACTION * cap
        else:
            self._paused = stock >= cap
        return self._paused

    def key_material(self, n: int) -> bytes:
        """``n`` key bytes: the OS CSPRNG (a seeded PRNG only under ``testing = true``)."""
        if self._key_random is not None:
            return self._key_random.randbytes(n)
        return os.urandom(n)

    # -- sessions ----------------------------------------------------------------------------
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
            await _Session(self, cr, cw, qr, qw).run()
            if self.state is ModuleState.ABORTED:
                return

    def _accept(self, kind: str) -> Any:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            old = self._pending.pop(kind, None)
            if old is not None:
                old[1].close()
            self._pending[kind] = (reader, writer)
            if "classical" not in self._pending or "quantum" not in self._pending:
                return
            cr, cw = self._pending.pop("classical")
            qr, qw = self._pending.pop("quantum")
            if self._session is not None:
                self._session.close()
            async with self._session_lock:
                with contextlib.suppress(asyncio.CancelledError):  # the module is stopping
                    await _Session(self, cr, cw, qr, qw).run()

        return accept


class _Session:
    """Both channels to the peer module, from handshake to close."""

    def __init__(
        self,
        module: EmulatedModule,
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
        self.confirmed = asyncio.Event()
        self._closed = False
        # transmitter: blocks reported with key, awaiting Confirm: block -> (outcome, keys, ...)
        self.awaiting: dict[int, tuple[BlockOutcome, bytes, int, bool]] = {}
        # receiver: key frames by block, and blocks stored but not yet committed
        self.key_frames: dict[int, asyncio.Future[bytes]] = {}
        self.stored: dict[int, BlockStats] = {}

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
        while True:
            data = await read_frame(self.cr)
            try:
                opened = self.opener.open(data)
                message = m.decode(opened.payload)
            except (AuthError, MessageError) as e:
                log(_LOG, logging.WARNING, "classical_frame_refused", error=str(e))
                continue
            self.opener.accept(opened)
            return message

    async def _first_hello(self) -> m.Hello:
        while True:
            data = await asyncio.wait_for(read_frame(self.cr), HANDSHAKE_TIMEOUT)
            try:
                opened = self.opener.open(data)
                msg = m.decode(opened.payload)
            except (AuthError, MessageError) as e:
                log(_LOG, logging.WARNING, "classical_frame_refused", error=str(e))
                continue
            if (
                not isinstance(msg, m.Hello)
                or msg.nonce != self.nonce
                or msg.link != self.m.config.link
            ):
                log(
                    _LOG,
                    logging.WARNING,
                    "classical_frame_refused",
                    error="first message is not a fresh Hello of this link",
                )
                continue
            self.opener.accept(opened)
            return msg

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
            peer_nonce = await asyncio.wait_for(self.cr.readexactly(NONCE_BYTES), HANDSHAKE_TIMEOUT)
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
            mod._peer_stock = hello.stock
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
                    _LOG,
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
                    _LOG,
                    logging.INFO,
                    "pending_keys_dropped",
                    keys=dropped,
                    reason="the transmitter never stored their block",
                )
            self.send(m.Hello(cfg.link, Role.RECEIVER, peer_nonce, 0, store.key_count(), ""))
        await self.cw.drain()

    async def run(self) -> None:
        mod = self.m
        mod._session = self
        tasks: list[asyncio.Task[None]] = []
        try:
            await self._handshake()
            mod.state = ModuleState.RUNNING
            log(_LOG, logging.INFO, "session_up", role=mod.role, fidelity="emulated")
            tasks.append(asyncio.create_task(self._classical_loop()))
            if mod.role is Role.TRANSMITTER:
                tasks.append(asyncio.create_task(self._produce()))
            else:
                tasks.append(asyncio.create_task(self._quantum_loop()))
                tasks.append(asyncio.create_task(self._heartbeat()))
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                exc = t.exception()
                if isinstance(exc, AuthKeyExhausted):
                    mod.state = ModuleState.ABORTED
                    log(
                        _LOG,
                        logging.ERROR,
                        "auth_key_exhausted",
                        message="no authentication key left: the link stops",
                    )
                elif exc is not None and not isinstance(exc, SessionClosed):
                    raise exc
                elif exc is not None:
                    log(_LOG, logging.INFO, "session_closed", reason=str(exc))
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
            for o, _, _, _ in self.awaiting.values():
                mod.record(
                    dataclasses.replace(
                        _stats(o, 0, 0), aborted=True, reason=AbortReason.CONNECTION_LOST
                    )
                )
            for fut in self.key_frames.values():
                fut.cancel()
            if mod._session is self:
                mod._session = None
            if mod.state is ModuleState.RUNNING:
                mod.state = ModuleState.CONNECTING

    # -- transmitter -------------------------------------------------------------------------
    async def _produce(self) -> None:
        mod = self.m
        p = mod.params
        schedule = block_schedule(p)  # a short first block, then doubling up to the plan's
        pulses = next(schedule)
        due = time.monotonic() + pulses / p.clock_hz
        while True:
            await asyncio.sleep(max(due - time.monotonic(), 0.0))
            this, pulses = pulses, next(schedule)
            due = max(due + pulses / p.clock_hz, time.monotonic())
            while len(self.awaiting) >= MAX_IN_FLIGHT:
                self.confirmed.clear()
                await self.confirmed.wait()
            block = int(mod.store.get("next_block", 0))
            mod.store.put("next_block", block + 1)
            test = mod.production_paused()
            outcome = sample_block(p, block, mod.nature, eve_fraction=mod.eve_fraction, pulses=this)
            refill = 0
            if not outcome.aborted:
                blocks = max(mod.status.blocks_ok + mod.status.blocks_aborted, 1)
                recv_pos = self.opener.next_position
                available = (
                    mod.pad.available_bytes(0),
                    max(mod.pad.available_bytes(1) - recv_pos, 0),
                )
                refill = refill_bits(
                    outcome.secret_bits, available, mod.pad.consumed_bytes // blocks
                )
            usable = refill if test else outcome.secret_bits
            if outcome.aborted or usable == 0:
                self.send(report(outcome, 0, test))
                mod.record(_stats(outcome, 0, 0 if outcome.aborted else self._key_bits(outcome)))
                if outcome.aborted:
                    log(
                        _LOG,
                        logging.WARNING,
                        "block_aborted",
                        block=block,
                        reason=outcome.reason.label if outcome.reason else None,
                        qber_x=round(outcome.qber_x, 5),
                    )
            else:
                material = mod.key_material(math.ceil(usable / 8))
                self.awaiting[block] = (outcome, material, refill, test)
                self.qw.write(length_prefixed(self.qseal.seal(encode_key_frame(block, material))))
                self.send(report(outcome, refill, test))
            await self.qw.drain()
            await self.cw.drain()

    def _key_bits(self, o: BlockOutcome) -> int:
        size = self.m.config.northbound.key_size
        return (o.secret_bits // size) * size

    async def _on_confirm(self, msg: m.Confirm) -> None:
        mod = self.m
        mod._peer_stock = msg.stock
        entry = self.awaiting.pop(msg.block, None)
        self.confirmed.set()
        if entry is None:
            raise SessionClosed(f"confirm of block {msg.block}, which is not awaiting one")
        outcome, material, refill, test = entry
        if not msg.ok:
            try:
                reason = AbortReason(msg.reason)
            except ValueError:
                reason = AbortReason.PROTOCOL_ERROR
            mod.record(dataclasses.replace(_stats(outcome, 0, 0), aborted=True, reason=reason))
            return
        size = mod.config.northbound.key_size
        usable = refill if test else outcome.secret_bits
        keys, to_rx, to_tx = split_key(mod.config.link, msg.block, material, usable, refill, size)
        await asyncio.to_thread(mod.store.store_block, msg.block, keys, (to_rx, to_tx), True)
        if to_rx or to_tx:
            mod.pad.add_chunk_loaded(msg.block, to_rx, to_tx, True)
        self.send(m.Commit(msg.block))
        stored = len(keys)
        delivered = self._key_bits(outcome) if test else stored * size
        del keys, material
        release_memory()
        mod.record(_stats(outcome, refill, delivered))
        log(
            _LOG,
            logging.INFO,
            "block_ok",
            block=msg.block,
            secret_bits=outcome.secret_bits,
            qber=round(outcome.qber, 5),
            keys=stored,
            test=test,
        )

    # -- receiver ----------------------------------------------------------------------------
    def _key_frame(self, block: int) -> asyncio.Future[bytes]:
        fut = self.key_frames.get(block)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self.key_frames[block] = fut
        return fut

    async def _quantum_loop(self) -> None:
        while True:
            data = await read_frame(self.qr)
            try:
                block, material = decode_key_frame(self.qopen.open(data))
            except (SealError, KeyFrameError) as e:
                log(
                    _LOG,
                    logging.ERROR,
                    "quantum_frame_refused",
                    error=str(e),
                    message="the sealed quantum channel was tampered with: session closed",
                )
                raise SessionClosed("quantum frame refused") from None
            fut = self._key_frame(block)
            if fut.done():
                raise SessionClosed(f"second key frame for block {block}")
            fut.set_result(material)

    async def _on_report(self, msg: m.BlockReport) -> None:
        mod = self.m
        try:
            outcome = check_report(mod.params, msg, None)
        except ReportError as e:
            log(_LOG, logging.WARNING, "block_report_refused", block=msg.block, error=str(e))
            self.send(
                m.Confirm(msg.block, False, int(AbortReason.PROTOCOL_ERROR), mod.store.key_count())
            )
            raise SessionClosed("block report refused") from None
        usable = msg.auth_refill_bits if msg.test else msg.secret_bits
        if outcome.aborted or usable == 0:
            mod.record(_stats(outcome, 0, 0 if outcome.aborted else self._key_bits(outcome)))
            return
        try:
            material = await asyncio.wait_for(self._key_frame(msg.block), KEY_FRAME_TIMEOUT)
        except TimeoutError:
            raise SessionClosed(f"no key frame for block {msg.block}") from None
        finally:
            self.key_frames.pop(msg.block, None)
        if len(material) != math.ceil(usable / 8):
            raise SessionClosed(f"key frame of block {msg.block} has the wrong length")
        size = mod.config.northbound.key_size
        keys, to_rx, to_tx = split_key(
            mod.config.link, msg.block, material, usable, msg.auth_refill_bits, size
        )
        await asyncio.to_thread(mod.store.store_block, msg.block, keys, (to_rx, to_tx), False)
        if to_rx or to_tx:
            mod.pad.add_chunk_loaded(msg.block, to_rx, to_tx, False)
        delivered = self._key_bits(outcome) if msg.test else len(keys) * size
        self.stored[msg.block] = _stats(outcome, msg.auth_refill_bits, delivered)
        self.send(m.Confirm(msg.block, True, 0, mod.store.key_count()))
        del keys, material
        release_memory()

    async def _on_commit(self, msg: m.Commit) -> None:
        mod = self.m
        stats = self.stored.pop(msg.block, None)
        if stats is None:
            raise SessionClosed(f"commit of block {msg.block}, which is not stored")
        await asyncio.to_thread(mod.store.commit_blocks_upto, msg.block)
        mod.pad.commit_chunk(msg.block)
        mod.record(stats)

    async def _heartbeat(self) -> None:
        """The receiver's stock after each delivery (event-driven, no period)."""
        while True:
            await self.heartbeat_now.wait()
            self.heartbeat_now.clear()
            self.send(m.Heartbeat(self.m.store.key_count()))
            await self.cw.drain()

    # -- both --------------------------------------------------------------------------------
    async def _classical_loop(self) -> None:
        mod = self.m
        while True:
            msg = await self._receive()
            if isinstance(msg, m.Heartbeat):
                mod._peer_stock = msg.stock
            elif mod.role is Role.TRANSMITTER and isinstance(msg, m.Confirm):
                await self._on_confirm(msg)
            elif mod.role is Role.RECEIVER and isinstance(msg, m.BlockReport):
                await self._on_report(msg)
            elif mod.role is Role.RECEIVER and isinstance(msg, m.Commit):
                await self._on_commit(msg)
            else:
                raise SessionClosed(f"unexpected {type(msg).__name__} on an emulated link")
            await self.cw.drain()
