"""The key supply's accounting of what the KME delivered: split requests, hang-up, late keys.

A stand-in for the KME client records each enc_keys request; the session is a real one from an
in-memory OTP call.
"""

from __future__ import annotations

import asyncio
import functools
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest

from qphone.config.usedkeys import UsedKeys
from qphone.core.callparams import CallParams, Mode
from qphone.core.errors import KeyExhausted
from qphone.core.events import (
    FetchQkdKeys,
    KeyPurpose,
    ResolveQkdKeys,
    SendControl,
    SessionEvent,
)
from qphone.core.qkd import QkdKey
from qphone.core.session import CallSession, new_session
from qphone.demo.inmemorycall import MemoryKmePair, handshake
from qphone.endpoint.keysupply import HEDGE_GIVE_UP, KeySupply, take_batch
from qphone.endpoint.options import CallOptions
from qphone.endpoint.outcome import KeyReused, call_failure
from qphone.kmeclient import KmeReusedKey
from tests.support.inmemorycalls import ALICE, BOB, make_call


class RecordingKme:
    """enc_keys hands out fresh keys (after ``delay`` seconds), dec_keys any asked for; each
    request is recorded."""

    def __init__(self, delay: float = 0.0) -> None:
        self.requests: list[tuple[int, int]] = []
        self.resolved: list[list[uuid.UUID]] = []  # the key IDs of each dec_keys request
        self.delay = delay

    async def enc_keys(self, peer: str, number: int = 1, size_bits: int | None = None) -> list:
        self.requests.append((number, size_bits or 256))
        await asyncio.sleep(self.delay)
        return [QkdKey(uuid.uuid4(), os.urandom((size_bits or 256) // 8)) for _ in range(number)]

    async def dec_keys(self, peer: str, key_ids: Sequence[uuid.UUID]) -> list[QkdKey]:
        self.resolved.append(list(key_ids))
        return [QkdKey(i, os.urandom(128)) for i in key_ids]


def _supply(kme: RecordingKme, most: int | None = None) -> KeySupply:
    return KeySupply(kme, "bob", max_keys_per_request=most)  # type: ignore[arg-type]


async def test_requests_are_split_by_the_kmes_max_key_per_request() -> None:
    kme = RecordingKme()
    supply = _supply(kme, most=2)
    keys = await supply.fetch_keys(5, 1024)
    assert [n for n, _ in kme.requests] == [2, 2, 1] and len(keys) == 5
    assert supply.drawn_bits == 5 * 1024


async def test_the_handshake_keys_request_time_is_measured_for_the_pad_lookahead() -> None:
    """The caller's handshake key crosses the same route as the call's pad: its request time
    is what the call's first pad request must cover (runningcall reports it to the session)."""
    kme = RecordingKme(delay=0.05)
    supply = _supply(kme)
    assert supply.request_s == 0.0
    keys = await supply.handshake_keys(256, 1.0)
    assert len(keys) == 1 and supply.request_s >= 0.04


async def test_no_request_once_the_call_hangs_up_and_late_keys_count_as_dropped() -> None:
    call = make_call(CallParams(mode=Mode.OTP, pad_block_bits=1024))
    kme = RecordingKme(delay=0.05)
    supply = _supply(kme)
    supply.attach(call.initiator, lambda: None, lambda exc: None)
    supply.submit(FetchQkdKeys(KeyPurpose.PAD_I2R, 1, 1024))
    await asyncio.sleep(0.01)  # that request is in flight
    supply.submit(FetchQkdKeys(KeyPurpose.PAD_I2R, 1, 1024))  # queued
    supply.hang_up()
    supply.submit(FetchQkdKeys(KeyPurpose.PAD_R2I, 1, 1024))  # after the hang-up: ignored
    call.initiator.close()
    await supply.aclose()
    assert kme.requests == [(1, 1024)]  # only the one in flight reached the KME
    assert supply.drawn_bits == 1024 and supply.dropped_bits == 1024  # counted, erased


async def test_fetches_queued_behind_a_request_go_as_one_and_feed_the_latency() -> None:
    """While a request is in flight, the session's next fetches queue up; they reach the KME as
    one request (one relay across the network, not one per pad block and direction), each
    purpose gets its own keys in order, and the request's time reaches the session."""
    call = make_call(CallParams(mode=Mode.OTP, pad_block_bits=1024), pad_lookahead_s=0.5)
    kme = RecordingKme(delay=0.05)
    supply = _supply(kme)
    deliveries: list[int] = []  # each time keys went into the session: the KME requests so far
    supply.attach(call.initiator, lambda: deliveries.append(len(kme.requests)), lambda exc: None)
    supply.submit(FetchQkdKeys(KeyPurpose.PAD_I2R, 1, 1024))
    await asyncio.sleep(0.01)  # in flight
    supply.submit(FetchQkdKeys(KeyPurpose.PAD_I2R, 1, 1024))
    supply.submit(FetchQkdKeys(KeyPurpose.PAD_R2I, 2, 1024))
    async with asyncio.timeout(10):
        while len(deliveries) < 2:
            await asyncio.sleep(0.01)
    assert deliveries == [1, 2] and not supply.pending
    assert kme.requests[:2] == [(1, 1024), (3, 1024)]
    acc = call.initiator.key_accounting()
    assert acc.fetched >= 4 * 1024
    assert supply.latency_s is not None and supply.latency_s > 0
    horizon = call.initiator.pad_horizon_s
    assert horizon is not None and horizon > 0.5  # the lookahead grew by the latency
    call.initiator.close()
    await supply.aclose()


def test_a_batch_is_one_kind_in_order_and_the_rest_stays_queued() -> None:
    """Fetches of one key size go together, resolves go together, and whatever follows a
    different request stays behind it in the queue (announcement order is kept)."""
    f = [FetchQkdKeys(KeyPurpose.PAD_I2R, 1, 1024), FetchQkdKeys(KeyPurpose.PAD_R2I, 2, 1024)]
    other = FetchQkdKeys(KeyPurpose.PAD_I2R, 1, 2048)
    r = [ResolveQkdKeys(KeyPurpose.PAD_R2I, (uuid.uuid4(),), 1024) for _ in range(3)]
    # stops at the 2048-bit fetch
    assert take_batch(f[0], [f[1], other, f[0], r[0]]) == ([f[0], f[1]], [other, f[0], r[0]])
    assert take_batch(r[0], [r[1], r[2], f[0]]) == (r, [f[0]])


async def test_resolves_are_split_by_the_kmes_max_key_per_request() -> None:
    kme = RecordingKme()
    supply = _supply(kme, most=2)
    ids = [uuid.uuid4() for _ in range(5)]
    keys = await supply.resolve_keys(ids)
    seen = kme.resolved
    assert seen == [ids[:2], ids[2:4], ids[4:]] and [k.key_id for k in keys] == ids
    assert supply.drawn_bits == 5 * 1024


class ReservingKme:
    """A faulty KME behind the key-source protocol: after ``fresh`` keys it serves the first
    key's ID again (with its bytes), as a KME that allows re-reads would."""

    url = "https://faulty-kme.test:8443"

    def __init__(self, fresh: int) -> None:
        self.fresh = fresh
        self.served: list[QkdKey] = []

    def _next(self, size_bits: int | None) -> QkdKey:
        if len(self.served) < self.fresh:
            key = QkdKey(uuid.uuid4(), os.urandom((size_bits or 256) // 8))
        else:
            key = self.served[0]
        self.served.append(key)
        return key

    async def enc_keys(
        self, slave_sae_id: str, number: int = 1, size_bits: int | None = None
    ) -> list[QkdKey]:
        return [self._next(size_bits) for _ in range(number)]

    async def dec_keys(self, master_sae_id: str, key_ids: Sequence[uuid.UUID]) -> list[QkdKey]:
        by_id = {k.key_id: k for k in self.served}
        return [by_id[k] for k in key_ids]


async def test_a_key_id_served_twice_is_refused_and_names_the_kme_as_faulty(
    tmp_path: Path,
) -> None:
    kme = ReservingKme(fresh=3)
    with UsedKeys(tmp_path / "alice.usedkeys") as used:
        supply = KeySupply(kme, "bob", used=used)
        first = await supply.handshake_keys(256, 1.0)
        assert len(await supply.fetch_keys(2, 256)) == 2
        with pytest.raises(KmeReusedKey) as caught:
            await supply.handshake_keys(256, 1.0)
    assert caught.value.key_id == first[0].key_id
    msg = str(caught.value)
    assert "\n" not in msg and kme.url in msg and "faulty" in msg and str(first[0].key_id) in msg
    failed = call_failure(caught.value, peer_sae_id="bob", own_sae_id="alice")
    assert isinstance(failed, KeyReused) and str(failed) == msg
    # a new terminal process on the same profile still refuses it (the record is on disk)
    with UsedKeys(tmp_path / "alice.usedkeys") as used:
        again = KeySupply(kme, "bob", used=used)
        with pytest.raises(KmeReusedKey):
            await again.resolve_keys([first[0].key_id])


async def test_a_reused_key_mid_call_ends_the_worker_and_reaches_no_session(
    tmp_path: Path,
) -> None:
    call = make_call(CallParams(mode=Mode.OTP, pad_block_bits=1024))
    kme = ReservingKme(fresh=1)
    failures: list[Exception] = []
    with UsedKeys(tmp_path / "u") as used:
        supply = KeySupply(kme, "bob", used=used)
        supply.attach(call.initiator, lambda: None, failures.append)
        supply.submit(FetchQkdKeys(KeyPurpose.PAD_I2R, 1, 1024))
        await asyncio.sleep(0.05)
        supply.submit(FetchQkdKeys(KeyPurpose.PAD_R2I, 1, 1024))
        await asyncio.sleep(0.05)
        await supply.aclose()
    assert len(failures) == 1 and isinstance(failures[0], KmeReusedKey)
    assert len(kme.served) == 2 and kme.served[0] is kme.served[1]


class SpikyKeySource:
    """A key route behind the key-source protocol whose relay time spikes: every ``enc_keys``
    takes ``usual`` seconds except those whose number is in ``slow`` (1 = the first), which take
    ``spike`` (a loaded route: one relay in many waits behind a busy node), and every request
    that starts after ``slow_from`` seconds takes ``spike`` (the whole route slow)."""

    url = "memory://spiky-route"

    def __init__(
        self,
        usual: float,
        spike: float,
        slow: set[int],
        slow_from: float = float("inf"),
    ) -> None:
        self.pair = MemoryKmePair()
        self.usual, self.spike, self.slow, self.slow_from = usual, spike, slow, slow_from
        self.times: list[float] = []  # each enc_keys request's delay, in order
        self.t0 = 0.0  # the stall's clock starts here (the loop's time)

    async def enc_keys(
        self, slave_sae_id: str, number: int = 1, size_bits: int | None = None
    ) -> list[QkdKey]:
        delay = self.spike if len(self.times) + 1 in self.slow else self.usual
        if asyncio.get_running_loop().time() - self.t0 >= self.slow_from:
            delay = self.spike
        self.times.append(delay)
        await asyncio.sleep(delay)
        return self.pair.enc_keys(number, size_bits or 256)

    async def dec_keys(self, master_sae_id: str, key_ids: Sequence[uuid.UUID]) -> list[QkdKey]:
        return self.pair.dec_keys(list(key_ids))


async def _otp_call_over(
    source: SpikyKeySource, seconds: float
) -> tuple[list[float], list[float], KeySupply]:
    """An OTP call at 12 kbit/s with the default pad lookahead, its keys through ``source``
    (the caller's key supply fetches, the answerer's resolves), frames both ways every 20 ms
    for ``seconds``: when each side had a frame it could not send for want of pad (seconds
    after it started talking; it starts once it holds its first pad, as the send path does),
    and the caller's key supply."""
    opts = CallOptions(mode=Mode.OTP, bitrate=12_000)
    params = opts.call_params()
    ini_result, res_result = handshake(ALICE, BOB, params, source.pair)
    ini = new_session(ini_result, pad_lookahead_s=opts.pad_lookahead_s)
    res = new_session(res_result)
    loop = asyncio.get_running_loop()
    supplies = {id(ini): KeySupply(source, "bob"), id(res): KeySupply(source, "alice")}  # type: ignore[arg-type]
    failures: list[Exception] = []

    def drain(s: CallSession, events: list[SessionEvent] | None = None) -> None:
        peer = res if s is ini else ini
        for ev in s.events() if events is None else events:
            if isinstance(ev, SendControl):  # the control channel: a moment later
                loop.call_soon(deliver, peer, ev.data)
            elif isinstance(ev, FetchQkdKeys | ResolveQkdKeys):
                supplies[id(s)].submit(ev)

    def deliver(s: CallSession, data: bytes) -> None:
        if not s.closed:
            s.receive_control(data)
            drain(s)

    for s in (ini, res):
        supplies[id(s)].attach(s, functools.partial(drain, s), failures.append)
    ini.key_latency(source.usual)  # the handshake key's request time, as runningcall reports
    drain(ini, ini.start())
    unsent: dict[int, list[float]] = {id(ini): [], id(res): []}
    started: dict[int, float] = {}
    first = min(1024, params.pad_block_bits // 8)
    payload = bytes(30)  # 12 kbit/s Opus
    t0 = source.t0 = loop.time()
    tick = 0
    while loop.time() - t0 < seconds + 0.5:
        tick += 1
        await asyncio.sleep(max(0.0, t0 + 0.02 * tick - loop.time()))
        now = loop.time()
        for s in (ini, res):
            peer = res if s is ini else ini
            if id(s) not in started:
                if s.pad_left_bytes < first:
                    continue
                started[id(s)] = now
            if now - started[id(s)] > seconds:
                continue
            try:
                frame = s.protect(payload, now)
            except KeyExhausted:
                unsent[id(s)].append(now - started[id(s)])
            else:
                peer.unprotect(frame, now)
                drain(peer)
            drain(s)
    for s in (ini, res):
        supplies[id(s)].hang_up()
        s.close()
        await supplies[id(s)].aclose()
    assert not failures, failures
    assert len(started) == 2, "a side never held its first pad"
    return unsent[id(ini)], unsent[id(res)], supplies[id(ini)]


async def test_a_relay_time_spike_starves_no_frame_at_the_default_lookahead() -> None:
    """A route whose relays usually take 20 ms, until one takes 1.5 s (hefei-metro-full under
    load: 1.1-1.7 s relays among 0.03-0.3 s ones starved 18-52 frames a side at the default
    0.5 s lookahead, docs/network.md section 6): the late fetch is asked for again, the second
    comes at the usual pace, and no frame of either side goes unsent."""
    source = SpikyKeySource(usual=0.02, spike=1.5, slow={6})
    ini_unsent, res_unsent, supply = await _otp_call_over(source, seconds=3.5)
    assert 1.5 in source.times[:6]  # the spike happened, early in the call
    assert ini_unsent == [] and res_unsent == [], (ini_unsent[:3], res_unsent[:3])
    assert supply.hedges == 1 and supply.hedges_in_vain == 0


async def test_no_more_hedges_once_they_are_late_themselves() -> None:
    """When the whole route turns slow (every relay from 0.5 s on takes 1.2 s instead of 20 ms),
    the first fetches are late against the usual time and their hedges are as slow: they only
    load the route, and after two such in a row the call hedges no more (one fetch in flight
    at a time, as before), though fetches are still late for a while (4 hedges without the
    rule; a third may open while the second is still out)."""
    source = SpikyKeySource(usual=0.02, spike=1.2, slow=set(), slow_from=0.5)
    _, _, supply = await _otp_call_over(source, seconds=4.0)
    assert supply.hedges_in_vain >= HEDGE_GIVE_UP, (supply.hedges, supply.hedges_in_vain)
    assert supply.hedges <= HEDGE_GIVE_UP + 1, (supply.hedges, supply.hedges_in_vain)
