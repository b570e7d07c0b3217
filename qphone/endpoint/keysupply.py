"""The key supply: QKD keys from the local KME (ETSI GS QKD 014) when the call needs them.

The caller is the ETSI 014 master SAE: it takes keys with ``enc_keys`` (for the handshake:
:meth:`KeySupply.handshake_keys`; during the call: :class:`~qphone.core.events.FetchQkdKeys`)
and announces their IDs.  The answerer is the slave SAE: it resolves announced IDs with
``dec_keys`` (:meth:`KeySupply.resolve_keys` in the handshake;
:class:`~qphone.core.events.ResolveQkdKeys` during the call), strictly in announcement order.
During the call, requests run in one background worker, ahead of need (the session asks
``lookahead`` epochs or pad blocks early), so a rotation never waits on the network.  A KME that
says it is out of key is retried for a while (a QKD link fills its pool at its own rate); any
other failure (a KME error, or keys the session refuses: wrong size, wrong IDs) is reported
once to ``on_failure`` and the worker stops: it never dies silently.

No key ID is used twice: with a record of used IDs (:class:`qphone.config.usedkeys.UsedKeys`),
every key the KME hands over is claimed in it, durably, before the session sees it; a reply with
an ID this terminal has seen before raises :class:`~qphone.kmeclient.KmeReusedKey` (the KME is
faulty) and none of its keys is used.

Every QKD bit the KME hands over is counted (:attr:`KeySupply.drawn_bits`); bits that arrive
after the session closed (a request in flight at hang-up, which :meth:`KeySupply.aclose` lets
finish for a moment so that nothing the KME delivered goes uncounted) are erased and counted in
:attr:`KeySupply.dropped_bits`.  Requests for more keys than the KME's
``max_key_per_request`` are split.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from qphone.config.usedkeys import Reuse, Seen, UsedKeys
from qphone.core.events import FetchQkdKeys, KeyPurpose, ResolveQkdKeys
from qphone.core.qkd import QkdKey
from qphone.core.session import CallSession
from qphone.endpoint.keysource import KeySource
from qphone.kmeclient import KmeOutOfKeys, KmeReusedKey

log = logging.getLogger(__name__)

KeyRequest = FetchQkdKeys | ResolveQkdKeys
MID_CALL_WAIT_S = 5.0  # how long an empty KME pool is waited out during a call before failing
CLOSE_WAIT_S = 0.5  # at hang-up, how long a KME request in flight may still finish
MAX_FETCH_LOG = 512  # fetches recorded in KeySupply.fetch_log
MAX_FETCHES_IN_FLIGHT = 2  # a late pad fetch and its hedge
LATE_FACTOR = 2.0  # a pad fetch is late after this many times the usual fetch time ...
LATE_MIN_S = 0.15  # ... and at least this long
HEDGE_TICK_S = 0.02  # how often a fetch in flight checks whether it is late, at most
TYPICAL_WEIGHT = 0.2  # the usual fetch time: each fetch moves it this much of the way
HEDGE_GIVE_UP = 2  # hedges in a row that were late themselves: hedging stops
PAD_PURPOSES = frozenset({KeyPurpose.PAD_I2R, KeyPurpose.PAD_R2I})

T = TypeVar("T")


def reused_key(url: str, reuse: Reuse, filter_false_alarm: float) -> KmeReusedKey:
    """The one line that says the KME at ``url`` re-served a key and is faulty."""
    if reuse.seen is Seen.RECORDED and reuse.when is not None:
        when = datetime.fromtimestamp(reuse.when, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        before = f"which this terminal already used ({when})"
    else:
        before = (
            "which this terminal has most likely used before (its record of older key IDs; "
            f"chance of a false alarm {filter_false_alarm:.1e})"
        )
    return KmeReusedKey(
        f"the KME at {url} is faulty: it served key ID {reuse.key_id}, {before}; a key used "
        "twice would reuse a pad, so no key of that reply is used (fail closed): report it to "
        "the KME's operator",
        reuse.key_id,
    )


async def retry_out_of_keys(
    request: Callable[[], Awaitable[T]],
    wait_s: float,
    on_wait: Callable[[], None] | None = None,
) -> T:
    """Run ``request``; while the KME says it is out of key, retry for up to ``wait_s`` seconds
    (a QKD link fills its pool at its own rate). Other errors are raised at once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    delay = 0.05
    told = False
    while True:
        try:
            return await request()
        except KmeOutOfKeys:
            if loop.time() + delay > deadline:
                raise
            if on_wait is not None and not told:
                on_wait()
                told = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


@dataclass
class FetchClock:
    """The time a fetch's successful KME requests took so far (waits for an empty pool
    excluded), and when the request in flight started (None: none in flight)."""

    took: float = 0.0
    attempt_started: float | None = None
    hedged: bool = False  # late, and a second fetch opened beside it
    hedge_of: FetchClock | None = None  # this fetch bridges that late one

    def age(self, now: float) -> float:
        """Seconds of request time so far, the one in flight included."""
        started = self.attempt_started
        return self.took + (now - started if started is not None else 0.0)


def take_batch(
    first: KeyRequest, queued: Sequence[KeyRequest]
) -> tuple[list[KeyRequest], list[KeyRequest]]:
    """(``first`` and the requests of its kind right behind it in ``queued``, the rest in
    order): fetches of keys of the same size go to the KME as one ``enc_keys`` (one relay across
    the network, not one per pad block and direction), resolves as one ``dec_keys``, still in
    announcement order; whatever follows a request of another kind stays behind it."""
    batch = [first]
    rest: list[KeyRequest] = []
    for nxt in queued:
        same = (
            isinstance(nxt, FetchQkdKeys)
            and isinstance(first, FetchQkdKeys)
            and nxt.bits == first.bits
        ) or (isinstance(nxt, ResolveQkdKeys) and isinstance(first, ResolveQkdKeys))
        if same and not rest:
            batch.append(nxt)
        else:
            rest.append(nxt)
    return batch, rest


class KeySupply:
    """QKD keys for one call, shared with ``peer_sae_id``, from this endpoint's KME."""

    def __init__(
        self,
        kme: KeySource,
        peer_sae_id: str,
        wait_s: float = MID_CALL_WAIT_S,
        max_keys_per_request: int | None = None,
        used: UsedKeys | None = None,
    ) -> None:
        self._kme = kme
        self._used = used
        self._peer = peer_sae_id
        self.wait_s = wait_s
        self.max_keys_per_request = max_keys_per_request
        self.drawn_bits = 0  # every QKD bit the KME delivered for this call
        self.dropped_bits = 0  # delivered after the session closed: erased unused
        self.latency_s: float | None = None  # the last mid-call fetch: its KME requests' time
        self.request_s = 0.0  # the time the last fetch_keys spent in successful requests
        # the first MAX_FETCH_LOG fetches (handshake key included): (monotonic time asked,
        # seconds the successful requests took, seconds until delivery (waits for an empty
        # pool included), bits), for the summary's pad timeline
        self.fetch_log: list[tuple[float, float, float, int]] = []
        self._in_request = False  # a resolve in flight
        self._fetching: dict[asyncio.Task[None], FetchClock] = {}  # fetches in flight
        self._fetch_ended = asyncio.Event()  # a fetch ended or turned late
        self._typical_s = 0.0  # the usual time of a fetch: an average of the recent ones
        self._failed = False
        self._hedge_for: FetchClock | None = None  # a late fetch whose hedge is not out yet
        self.hedges = 0  # second fetches opened beside a late one
        self.hedges_in_vain = 0  # ... that were late themselves (the route, not one relay)
        self._in_vain_run = 0  # hedges in vain in a row: at HEDGE_GIVE_UP, no more hedges
        self._hanging_up = False
        self._session: CallSession | None = None
        self._on_keys: Callable[[], None] = lambda: None
        self._on_failure: Callable[[Exception], None] = lambda exc: None
        self._queue: asyncio.Queue[KeyRequest] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------- handshake
    async def handshake_keys(
        self, bits: int, wait_s: float, on_wait: Callable[[], None] | None = None
    ) -> list[QkdKey]:
        """Caller: one key of ``bits`` for the handshake (waits out an empty pool).

        :attr:`request_s` becomes the time the successful request took, so that the call's
        first pad request already covers a slow route (waits for an empty pool excluded)."""
        loop = asyncio.get_running_loop()

        asked = time.monotonic()

        async def attempt() -> list[QkdKey]:
            t0 = loop.time()
            got = await self._kme.enc_keys(self._peer, 1, bits)
            self.request_s = self._typical_s = loop.time() - t0
            return got

        keys = await self._drawn(await retry_out_of_keys(attempt, wait_s, on_wait))
        self._log_fetch(asked, self.request_s, bits)
        return keys

    async def resolve_keys(self, key_ids: Sequence[uuid.UUID]) -> list[QkdKey]:
        """Answerer: the keys of announced IDs (the ClientHello's, then the call's), in order,
        in requests of at most ``max_keys_per_request`` IDs."""
        ids = list(key_ids)
        most = self.max_keys_per_request or len(ids) or 1
        keys: list[QkdKey] = []
        for at in range(0, len(ids), most):
            keys += await self._drawn(await self._kme.dec_keys(self._peer, ids[at : at + most]))
        return keys

    async def _drawn(self, keys: list[QkdKey]) -> list[QkdKey]:
        """Keys the KME handed over: counted, and claimed in the record of used IDs off the
        event loop (raises :class:`KmeReusedKey`, using none of them, if one was seen before)."""
        bits = sum(k.bits for k in keys)
        self.drawn_bits += bits
        if self._used is not None:
            try:
                reuse = await self._used.aclaim([k.key_id for k in keys])
            except asyncio.CancelledError:  # hung up during the claim: drawn, never used
                self.dropped_bits += bits
                raise
            if reuse is not None:
                raise reused_key(self._kme.url, reuse, self._used.filter_false_alarm())
        return keys

    async def fetch_keys(self, count: int, bits: int) -> list[QkdKey]:
        """``count`` keys of ``bits``, in requests of at most ``max_keys_per_request``.

        :attr:`request_s` becomes the time the successful requests took (waits for an empty
        pool between attempts excluded: they measure the link's rate, not the route's delay)."""
        clock = FetchClock()
        keys = await self._fetch(count, bits, clock)
        self.request_s = clock.took
        return keys

    async def _fetch(self, count: int, bits: int, clock: FetchClock) -> list[QkdKey]:
        """:meth:`fetch_keys`, timed on ``clock`` (which others may read while it runs)."""
        most = self.max_keys_per_request or count
        keys: list[QkdKey] = []
        loop = asyncio.get_running_loop()
        asked = time.monotonic()

        async def attempt(n: int) -> list[QkdKey]:
            clock.attempt_started = t0 = loop.time()
            try:
                got = await self._kme.enc_keys(self._peer, n, bits)
            finally:
                clock.attempt_started = None
            clock.took += loop.time() - t0
            return got

        while len(keys) < count:
            n = min(most, count - len(keys))
            got = await retry_out_of_keys(functools.partial(attempt, n), self.wait_s)
            keys += await self._drawn(got)
        self._log_fetch(asked, clock.took, count * bits)
        return keys

    def _log_fetch(self, asked: float, took: float, bits: int) -> None:
        if len(self.fetch_log) < MAX_FETCH_LOG:
            self.fetch_log.append((asked, took, time.monotonic() - asked, bits))

    # ----------------------------------------------------------------- during the call
    def attach(
        self,
        session: CallSession,
        on_keys: Callable[[], None],
        on_failure: Callable[[Exception], None],
    ) -> None:
        """Serve ``session``'s requests from now on; ``on_keys()`` runs after keys went into
        it (so the endpoint drains its new events), ``on_failure(exc)`` when the KME failed
        (a :class:`KmeError`) or its keys were refused (any other exception)."""
        self._session = session
        self._on_keys = on_keys
        self._on_failure = on_failure

    def hang_up(self) -> None:
        """The call is ending: no new KME requests (those queued are dropped), so no key is
        drawn that the call cannot use any more; a request in flight completes."""
        self._hanging_up = True
        while not self._queue.empty():
            self._queue.get_nowait()

    def submit(self, request: KeyRequest) -> None:
        if self._hanging_up:
            return
        self._queue.put_nowait(request)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="qphone-key-supply")

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def _next_batch(self, first: KeyRequest) -> list[KeyRequest]:
        """``first`` and the requests of its kind queued right behind it (:func:`take_batch`);
        the rest stays queued, in order."""
        queued: list[KeyRequest] = []
        while not self._queue.empty():
            queued.append(self._queue.get_nowait())
        batch, rest = take_batch(first, queued)
        for r in rest:  # back in order (nothing else touches the queue meanwhile)
            self._queue.put_nowait(r)
        return batch

    def _late_after(self) -> float:
        """Seconds of request time after which a pad fetch in flight is late: a spike of the
        route's relay time, not its usual pace."""
        return max(LATE_MIN_S, LATE_FACTOR * self._typical_s)

    def _slot_free(self) -> bool:
        """A fetch may start: none in flight, or each in flight is late (and fewer than
        :data:`MAX_FETCHES_IN_FLIGHT`)."""
        fetching = self._fetching
        return not fetching or (
            len(fetching) < MAX_FETCHES_IN_FLIGHT and all(c.hedged for c in fetching.values())
        )

    async def _run(self) -> None:
        session = self._session
        assert session is not None, "attach() first"
        try:
            while True:
                first = await self._queue.get()
                if isinstance(first, FetchQkdKeys):
                    while not self._slot_free():  # queued fetches batch up meanwhile
                        await self._fetch_ended.wait()
                        self._fetch_ended.clear()
                else:  # resolves keep their place behind fetches (only one kind in practice)
                    while self._fetching:
                        await self._fetch_ended.wait()
                        self._fetch_ended.clear()
                if session.closed or self._hanging_up:
                    return
                batch = self._next_batch(first)
                if isinstance(first, FetchQkdKeys):
                    fetches = [r for r in batch if isinstance(r, FetchQkdKeys)]
                    clock = FetchClock(hedge_of=self._hedge_for)
                    self._hedge_for = None
                    task = asyncio.create_task(self._fetch_batch(session, fetches, clock))
                    self._fetching[task] = clock
                    task.add_done_callback(self._fetch_done)
                    continue
                self._in_request = True
                try:
                    resolves = [r for r in batch if isinstance(r, ResolveQkdKeys)]
                    keys = await self.resolve_keys([i for r in resolves for i in r.key_ids])
                finally:
                    self._in_request = False
                if session.closed:
                    self.dropped_bits += sum(k.bits for k in keys)
                    return
                at = 0
                for r in resolves:  # each announcement its own keys, in order
                    session.provide_qkd_keys(r.purpose, keys[at : at + len(r.key_ids)])
                    at += len(r.key_ids)
                self._on_keys()
        except Exception as exc:  # any failure ends the worker, never silently
            self._fail(exc)

    def _fetch_done(self, task: asyncio.Task[None]) -> None:
        self._fetching.pop(task, None)
        self._fetch_ended.set()

    def _fail(self, exc: Exception) -> None:
        """A request failed or its keys were refused: said once; no request is made after."""
        if self._failed:
            return
        self._failed = True
        self._hanging_up = True
        log.warning("QKD key request failed: %s", exc)
        self._on_failure(exc)
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()

    async def _fetch_batch(
        self, session: CallSession, fetches: list[FetchQkdKeys], clock: FetchClock
    ) -> None:
        """One ``enc_keys`` (split by ``max_keys_per_request``) for ``fetches``, its keys into
        the session in the order asked, its time reported; a pad fetch that turns late is
        hedged (:meth:`_hedge_when_late`)."""
        hedge = None
        if any(f.purpose in PAD_PURPOSES for f in fetches):
            hedge = asyncio.create_task(self._hedge_when_late(fetches, clock))
        try:
            keys = await self._fetch(sum(r.count for r in fetches), fetches[0].bits, clock)
            if session.closed:
                self.dropped_bits += sum(k.bits for k in keys)
                return
            at = 0
            for f in fetches:  # each request gets its keys, in the order asked
                session.provide_qkd_keys(f.purpose, keys[at : at + f.count])
                at += f.count
            if clock.hedge_of is not None:  # was the hedge itself late: the route, not a relay?
                in_vain = clock.took >= self._late_after()
                self.hedges_in_vain += in_vain
                self._in_vain_run = self._in_vain_run + 1 if in_vain else 0
            self.request_s = self.latency_s = clock.took
            self._typical_s += TYPICAL_WEIGHT * (clock.took - self._typical_s)
            session.key_latency(clock.took)
        except Exception as exc:  # any failure ends the key supply, never silently
            self._fail(exc)
            return
        finally:
            if hedge is not None:
                hedge.cancel()
        self._on_keys()

    async def _hedge_when_late(self, fetches: list[FetchQkdKeys], clock: FetchClock) -> None:
        """Once ``fetches`` are late (:meth:`_late_after` of request time), open a second
        fetch beside them, once, with one block of each pad stream they were for: on a loaded
        route one relay now and then takes several times the usual time (a 4-hop relay 1.7 s
        among 0.03-0.3 s ones) while the next goes through at the usual pace.  One block
        bridges the stream; the session's own demand then flows through the second slot while
        the late fetch is out.  One block, not the late fetch again: on a route short of key
        (china-backbone's slowest link is just under an OTP call's rate) a whole duplicate
        drew the stock twice and ran the pool empty.  Whatever comes later adds to the
        lookahead (never to a reused pad: every key is a new one).  When the whole route is
        slow rather than one relay (china-backbone's 41 hops stalled for seconds at a time), the
        hedge is late too and only loads the route: after :data:`HEDGE_GIVE_UP` late hedges in
        a row the call hedges no more.  (A hedge that came at the usual pace after a late fetch
        that was only a little late says nothing against hedging: on hefei-metro-full counting
        those stopped the hedges before the 1.4 s relay that then starved 60 frames a side.)"""
        loop = asyncio.get_running_loop()
        while (age := clock.age(loop.time())) < (late := self._late_after()):
            await asyncio.sleep(max(HEDGE_TICK_S, late - age))
        if self._in_vain_run >= HEDGE_GIVE_UP:  # the whole route is slow: one fetch at a time
            return
        clock.hedged = True
        self.hedges += 1
        self._hedge_for = clock
        if not self._hanging_up:
            purposes = dict.fromkeys(f.purpose for f in fetches if f.purpose in PAD_PURPOSES)
            for purpose in purposes:
                self._queue.put_nowait(FetchQkdKeys(purpose, 1, fetches[0].bits))
            self._fetch_ended.set()  # the worker may start it now

    async def aclose(self) -> None:
        """Stop the worker: a request in flight may finish for up to :data:`CLOSE_WAIT_S`
        (its keys are counted as dropped); requests not started yet are not made."""
        task = self._task
        if task is None:
            return
        busy = [t for t in self._fetching if not t.done()]
        if self._in_request and not task.done():
            busy.append(task)
        if busy:
            await asyncio.wait(busy, timeout=CLOSE_WAIT_S)
        for t in [task, *self._fetching]:
            t.cancel()
        for t in [task, *self._fetching]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
