"""One emulated QKD module (``fidelity = "emulated"``): the asyncio adapter of
:mod:`keyserver.qkd.emulation`. Its northbound API, store, key IDs, connections and authenticated
classical channel are the physics module's (:mod:`keyserver.qkd.moduleprocess`,
:mod:`keyserver.qkd.peersession`); what differs is below.

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

from keyserver.jsonlog import log
from keyserver.qkd import messages as m
from keyserver.qkd.blocks import TAG_BITS, BlockStats, refill_bits, split_key
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
from keyserver.qkd.framing import SessionClosed, length_prefixed
from keyserver.qkd.messages import AbortReason
from keyserver.qkd.moduleprocess import ModuleProcess
from keyserver.qkd.peersession import PeerSession
from keyserver.qkd.physics import binary_entropy
from keyserver.qkd.role import Role

_LOG = logging.getLogger("keyserver.qkd.emulatedmodule")
KEY_FRAME_TIMEOUT = 30.0  # a report waits this long for its block's key frame
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


class EmulatedModule(ModuleProcess):
    """One emulated QKD module. ``await start()``, then ``await stop()``."""

    FIDELITY = "emulated"

    def __init__(self, config: ModuleConfig) -> None:
        super().__init__(config, _LOG, _Session)
        self._eve_fraction = config.params.eve_fraction

    def _build(self) -> None:
        cfg = self.config
        self.nature = _nature(cfg.seed, f"{cfg.link}/{self.role}")
        self._key_random = random.Random(f"qphone-emulated-key/{cfg.seed}") if cfg.seeded else None

    def log_fields(self) -> dict[str, str]:
        return {"fidelity": self.FIDELITY}

    def eve_fraction(self) -> float:
        return self._eve_fraction

    def _set_eve(self, fraction: float) -> float:
        self._eve_fraction = fraction
        log(_LOG, logging.WARNING, "eavesdropper_set", fraction=fraction)
        return fraction

    def key_material(self, n: int) -> bytes:
        """``n`` key bytes: the OS CSPRNG (a seeded PRNG only under ``testing = true``)."""
        if self._key_random is not None:
            return self._key_random.randbytes(n)
        return os.urandom(n)


class _Session(PeerSession[EmulatedModule]):
    """A session of the emulated pair: key frames on the sealed quantum channel, block reports
    and the commit protocol on the classical one."""

    def __init__(
        self,
        module: EmulatedModule,
        creader: asyncio.StreamReader,
        cwriter: asyncio.StreamWriter,
        qreader: asyncio.StreamReader,
        qwriter: asyncio.StreamWriter,
    ) -> None:
        super().__init__(module, creader, cwriter, qreader, qwriter)
        self.confirmed = asyncio.Event()
        # transmitter: blocks reported with key, awaiting Confirm: block -> (outcome, keys, ...)
        self.awaiting: dict[int, tuple[BlockOutcome, bytes, int, bool]] = {}
        # receiver: key frames by block, and blocks stored but not yet committed
        self.key_frames: dict[int, asyncio.Future[bytes]] = {}
        self.stored: dict[int, BlockStats] = {}

    async def _discard(self) -> None:
        mod = self.m
        for o, _, _, _ in self.awaiting.values():
            mod.record(
                dataclasses.replace(
                    _stats(o, 0, 0), aborted=True, reason=AbortReason.CONNECTION_LOST
                )
            )
        for fut in self.key_frames.values():
            fut.cancel()

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
            outcome = sample_block(
                p, block, mod.nature, eve_fraction=mod.eve_fraction(), pulses=this
            )
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
        mod.peer_stock = msg.stock
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

    async def _consume(self) -> None:
        while True:
            data = await self._read_quantum()
            try:
                block, material = decode_key_frame(data)
            except KeyFrameError as e:
                raise self._quantum_refused(e) from None
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
            async with asyncio.timeout(KEY_FRAME_TIMEOUT):
                material = await self._key_frame(msg.block)
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

    # -- both --------------------------------------------------------------------------------
    async def _on_message(self, msg: m.Message) -> None:
        role = self.m.role
        if role is Role.TRANSMITTER and isinstance(msg, m.Confirm):
            await self._on_confirm(msg)
        elif role is Role.RECEIVER and isinstance(msg, m.BlockReport):
            await self._on_report(msg)
        elif role is Role.RECEIVER and isinstance(msg, m.Commit):
            await self._on_commit(msg)
        else:
            raise SessionClosed(f"unexpected {type(msg).__name__} on an emulated link")
