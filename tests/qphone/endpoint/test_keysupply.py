"""The key supply's accounting of what the KME delivered: split requests, hang-up, late keys.

A stand-in for the KME client records each enc_keys request; the session is a real one from an
in-memory OTP call.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest

from qphone.config.usedkeys import UsedKeys
from qphone.core.callparams import CallParams, Mode
from qphone.core.events import FetchQkdKeys, KeyPurpose, ResolveQkdKeys
from qphone.core.qkd import QkdKey
from qphone.endpoint.keysupply import KeySupply, take_batch
from qphone.endpoint.outcome import KeyReused, call_failure
from qphone.kmeclient import KmeReusedKey
from tests.support.inmemorycalls import make_call


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
