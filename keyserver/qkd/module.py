"""One QKD module process (``qkd-keyserver module --config FILE``), ``fidelity = "physics"``:
the asyncio adapter of :mod:`keyserver.qkd.postprocessing`.

It moves bytes and nothing else: quantum-channel frames (the simulated fibre) and authenticated
classical-channel frames between the two modules, into and out of the sans-I/O machines of
:mod:`keyserver.qkd.postprocessing`; it makes blocks durable in :mod:`keyserver.qkd.store` before
the protocol goes on, and paces the source in real time. What it shares with the emulated
fidelity (lifecycle, northbound ETSI 014 API, store, connections, the handshake and key-ID
agreement) is :mod:`keyserver.qkd.moduleprocess` and :mod:`keyserver.qkd.peersession`. If a
session breaks, the blocks in progress are discarded by both and the transmitter reconnects.

Wire: each channel carries frames as ``u32 length || bytes`` (quantum channel: sealed photon
records, :func:`keyserver.qkd.quantumchannel.encode_frame`; classical channel: WC-authenticated
messages, :mod:`keyserver.qkd.classicalchannel`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque

from keyserver.jsonlog import log
from keyserver.qkd import messages as m
from keyserver.qkd.config import ModuleConfig
from keyserver.qkd.framing import SessionClosed, length_prefixed
from keyserver.qkd.moduleprocess import ModuleProcess
from keyserver.qkd.peersession import PeerSession
from keyserver.qkd.physics import LinkParams
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
from keyserver.qkd.role import Role

_LOG = logging.getLogger("keyserver.qkd.module")
HEARTBEAT_SECONDS = 2.0
IDLE_POLL_SECONDS = 1.0  # an idle source re-checks at least this often (else woken by events)
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


class Module(ModuleProcess):
    """One QKD module. ``await start()``, then ``await stop()``; ``failed`` on fatal errors."""

    FIDELITY = "physics"

    def __init__(self, config: ModuleConfig) -> None:
        super().__init__(config, _LOG, _Session)
        self._lock = asyncio.Lock()  # one machine step at a time
        self._probe = False  # run one block even at a full stock (Eve was just set)
        self._bob_stats: BlockStats | None = None  # receiver: the last block stored
        self.wake = asyncio.Event()  # stock or blocks in flight changed: an idle source looks

    def _build(self) -> None:
        cfg = self.config
        self.random = RandomSource(cfg.seed, f"{cfg.link}/{self.role}".encode())
        if self.role is Role.TRANSMITTER:
            self.fibre = Fibre(self.params, nature(cfg.seed, b"fibre"))
            self.machine: Alice | Bob = Alice(
                self.params, cfg.link, cfg.northbound.key_size, self.random
            )
        else:
            self.detector = Detector(self.params, nature(cfg.seed, b"detector"))
            self.machine = Bob(self.params, cfg.link, cfg.northbound.key_size, self.random)

    def agreed(self, params: LinkParams) -> None:
        assert isinstance(self.machine, Bob)
        self.machine.params = params
        self.detector.params = params
        self.machine.stock = self.store.key_count()

    # -- eavesdropper and stock -------------------------------------------------------------
    def eve_fraction(self) -> float:
        return self.fibre.eve_fraction

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
        super()._on_delivered()

    def production_paused(self) -> bool:
        if self._probe:
            return False
        return super().production_paused()

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
                self.record(o.stats)
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
                    stats = self._bob_stats
                    if stats is not None and stats.block == o.block:
                        self.record(stats)
                else:
                    if o.stats is not None:
                        self.record(o.stats)
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

    def machine_used_auth(self) -> None:
        assert isinstance(self.machine, Alice)
        blocks = max(self.status.blocks_ok + self.status.blocks_aborted, 1)
        self.machine.auth_used_per_block = self.pad.consumed_bytes // blocks
        recv_pos = self.session.opener.next_position if self.session else 0
        self.machine.auth_available = (
            self.pad.available_bytes(0),
            max(self.pad.available_bytes(1) - recv_pos, 0),
        )


class _Session(PeerSession[Module]):
    """A session of the physics pair: photon frames on the quantum channel, post-processing
    messages on the classical one."""

    HEARTBEAT_SECONDS = HEARTBEAT_SECONDS
    RECOVERABLE = (ProtocolError, QuantumChannelError)

    async def _discard(self) -> None:
        mod = self.m
        async with mod._lock:
            outs = mod.machine.reset()
        for o in outs:
            if isinstance(o, BlockAborted):
                mod.record(o.stats)

    def _peer_stock_told(self) -> None:
        self.m.wake.set()

    async def _on_message(self, msg: m.Message) -> None:
        mod = self.m
        if isinstance(msg, m.Hello):
            raise SessionClosed("unexpected Hello")
        if isinstance(msg, m.Confirm):
            mod.peer_stock = msg.stock
        async with mod._lock:
            if _quick(msg):  # a few ms at most: a thread hand-off would cost more
                outs = mod.machine.receive(msg)
            else:
                outs = await asyncio.to_thread(mod.machine.receive, msg)
            await mod.handle(self, outs)

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
                    async with asyncio.timeout(IDLE_POLL_SECONDS):
                        await mod.wake.wait()
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
            frame = decode_frame(await self._read_quantum())
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
