"""The source side of the simulated QKD link: produce key blocks, share them with the peer KME.

The source KME runs the BB84 simulator (``keyserver.qkd.simulator``) in a child process, paces its
output in real time (a block becomes available when the simulated link would have finished it),
cuts each secret key block into segments, stores them as *pending*, pushes them to the sink KME
over the authenticated link and marks them *ready* on the sink's acknowledgement. Production stops
when both directions hold ``max_key_count`` keys and resumes when one falls below 80% of it.
Pending segments are pushed again after a restart (the sink ignores what it already holds). Each
segment is owned by the KME whose share of the pool is smaller, so both directions get key. Aborted
blocks (QBER or key-rate bound says no key, e.g. an eavesdropper) deliver nothing; they are counted
in the link statistics, which travel to the sink with every push."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Protocol

from keyserver.jsonlog import log
from keyserver.kms.linkstats import LinkStats
from keyserver.kms.peer import PeerClient, PeerUnavailable, encode_segments
from keyserver.kms.store import KeyStore, Segment

_LOG = logging.getLogger("keyserver.kms.link")
SEGMENT_BYTES = 4096
_PUSH_BATCH = 64


@dataclass(frozen=True)
class BlockOutcome:
    """One block of the link: secret key bytes (empty if aborted) and what the link measured."""

    key: bytes
    aborted: bool
    reason: str | None
    qber: float
    seconds_simulated: float
    pulses: int = 0
    eve_alarm: bool = False  # the link attributes the abort to an eavesdropper (QBER/bound)


class BlockSource(Protocol):
    async def next_block(self) -> BlockOutcome: ...

    async def aclose(self) -> None: ...


# -- the BB84 simulator in a child process ---------------------------------------------------
def _simulator_main(conn: Connection, params: dict[str, Any], seed: int | None) -> None:
    """Child process: build one LinkSimulator, then answer block requests until the pipe closes."""
    from keyserver.qkd import simulator as bb84

    link_params = bb84.LinkParams(**params)
    sim = bb84.LinkSimulator(link_params, seed=seed)
    while True:
        try:
            pulses = conn.recv()
        except (EOFError, OSError):
            return  # parent gone (possibly SIGKILLed): exit
        r = sim.run_block(pulses)
        conn.send(
            BlockOutcome(
                key=bytes(r.key),
                aborted=bool(r.aborted),
                reason=r.reason,
                qber=float(r.qber),
                seconds_simulated=float(r.seconds_simulated),
                pulses=int(r.pulses),
                eve_alarm=bool(r.eve_alarm),
            )
        )


class Bb84Source:
    """Runs ``keyserver.qkd.simulator.LinkSimulator`` in a spawned child process."""

    def __init__(self, params: dict[str, Any], pulses_per_block: int, seed: int | None) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_simulator_main, args=(child, params, seed), daemon=True, name="bb84-link"
        )
        self._proc.start()
        child.close()
        self._pulses = pulses_per_block
        self._lock = asyncio.Lock()

    async def next_block(self) -> BlockOutcome:
        async with self._lock:
            return await asyncio.to_thread(self._roundtrip)

    def _roundtrip(self) -> BlockOutcome:
        self._conn.send(self._pulses)
        try:
            out = self._conn.recv()
        except EOFError:
            raise RuntimeError(
                f"BB84 simulator process exited with code {self._proc.exitcode}"
            ) from None
        assert isinstance(out, BlockOutcome)
        return out

    async def aclose(self) -> None:
        self._conn.close()
        await asyncio.to_thread(self._proc.join, 5)
        if self._proc.is_alive():
            self._proc.terminate()


# -- producer ---------------------------------------------------------------------------------
class LinkRunner:
    """Source-side loop: simulate, pace, store, push. Owns the link statistics."""

    def __init__(
        self,
        store: KeyStore,
        peer: PeerClient,
        source: BlockSource,
        *,
        owners: tuple[str, str],
        cap_bytes: int,
        stats: LinkStats,
        on_stats: Callable[[], None] = lambda: None,
        pace: bool = True,
        resume_fraction: float = 0.8,
    ) -> None:
        self._store = store
        self._peer = peer
        self._source = source
        self._owners = owners
        self._cap = cap_bytes
        self.stats = stats
        self._on_stats = on_stats
        self._pace = pace
        self._resume = resume_fraction
        self._push_lock = asyncio.Lock()
        self._stats_dirty = True

    def _pool(self, owner: str) -> int:
        return self._store.stored_bytes(owner)

    async def run(self) -> None:
        with contextlib.suppress(PeerUnavailable):
            await self.push()
        deadline = time.monotonic()
        full = False
        while True:
            pools = {o: self._pool(o) for o in self._owners}
            # Hysteresis: once both directions are full, resume only below `resume_fraction`.
            low = min(pools.values())
            full = low >= self._cap or (full and low >= self._resume * self._cap)
            if full:
                await self._idle_push()
                deadline = time.monotonic()
                continue
            outcome = await self._source.next_block()
            if self._pace:
                deadline = max(deadline, time.monotonic() - 1.0) + outcome.seconds_simulated
                delay = deadline - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            self._record(outcome)
            if not outcome.aborted and outcome.key:
                self._store_block(outcome.key, pools)
            self._stats_dirty = True
            with contextlib.suppress(PeerUnavailable):
                await self.push()

    async def _idle_push(self) -> None:
        with contextlib.suppress(PeerUnavailable):
            await self.push()
        await asyncio.sleep(0.2)

    def _record(self, o: BlockOutcome) -> None:
        bits = 8 * len(o.key) if not o.aborted else 0
        self.stats.record(
            aborted=o.aborted, reason=o.reason, qber=o.qber, bits=bits,
            seconds=o.seconds_simulated, eve_alarm=o.eve_alarm,
        )
        self._store.set_meta("link_stats", self.stats.to_json())
        level = logging.WARNING if o.aborted else logging.DEBUG
        log(
            _LOG, level, "block_aborted" if o.aborted else "block_ok",
            qber=round(o.qber, 5) if o.qber == o.qber else None, secret_bits=bits,
            reason=o.reason, simulated_s=round(o.seconds_simulated, 6), pulses=o.pulses,
            blocks_aborted=self.stats.blocks_aborted,
            eavesdropper_alarm=self.stats.eavesdropper_alarm,
        )
        self._on_stats()

    def _store_block(self, key: bytes, pools: dict[str, int]) -> None:
        seq = self._store.next_segment_seq()
        segments = []
        for i in range(0, len(key), SEGMENT_BYTES):
            chunk = key[i : i + SEGMENT_BYTES]
            owner = min(self._owners, key=lambda o: pools[o])
            pools[owner] += len(chunk)
            segments.append(Segment(seq, owner, chunk))
            seq += 1
        self._store.add_segments(segments, ready=False)

    async def push(self) -> None:
        """Push pending segments (and the statistics) to the sink; mark them ready on its ack."""
        async with self._push_lock:
            while True:
                pending = self._store.pending_segments(_PUSH_BATCH)
                if not pending and not self._stats_dirty:
                    return
                reply = await self._peer.post(
                    "/link/v1/segments",
                    {"segments": encode_segments(pending), "stats": self.stats.extension()},
                )
                self._stats_dirty = False
                held = reply.get("held_up_to")
                if isinstance(held, bool) or not isinstance(held, int):
                    raise PeerUnavailable(f"sink answered a bad acknowledgement: {reply}")
                if pending:
                    if held < pending[0].seq:
                        raise PeerUnavailable(f"sink holds up to {held}, below {pending[0].seq}")
                    self._store.mark_ready(held)
                    log(_LOG, logging.DEBUG, "segments_pushed", count=len(pending), held_up_to=held)
                if len(pending) < _PUSH_BATCH:
                    return
