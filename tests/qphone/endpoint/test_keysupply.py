"""The key supply's accounting of what the KME delivered: split requests, hang-up, late keys.

A stand-in for the KME client records each enc_keys request; the session is a real one from an
in-memory OTP call.
"""

from __future__ import annotations

import asyncio
import os
import uuid

from qphone.core.callparams import CallParams, Mode
from qphone.core.qkd import QkdKey
from qphone.core.session import FetchQkdKeys, KeyPurpose
from qphone.endpoint.keysupply import KeySupply
from tests.support.inmemorycalls import make_call


class RecordingKme:
    """enc_keys hands out fresh keys (after ``delay`` seconds) and records each request."""

    def __init__(self, delay: float = 0.0) -> None:
        self.requests: list[tuple[int, int]] = []
        self.delay = delay

    async def enc_keys(self, peer: str, number: int = 1, size_bits: int | None = None) -> list:
        self.requests.append((number, size_bits or 256))
        await asyncio.sleep(self.delay)
        return [QkdKey(uuid.uuid4(), os.urandom((size_bits or 256) // 8)) for _ in range(number)]


def _supply(kme: RecordingKme, most: int | None = None) -> KeySupply:
    return KeySupply(kme, "bob", max_keys_per_request=most)  # type: ignore[arg-type]


async def test_requests_are_split_by_the_kmes_max_key_per_request() -> None:
    kme = RecordingKme()
    supply = _supply(kme, most=2)
    keys = await supply._enc_keys(5, 1024)
    assert [n for n, _ in kme.requests] == [2, 2, 1] and len(keys) == 5
    assert supply.drawn_bits == 5 * 1024


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
    supply.attach(call.initiator, lambda: None, lambda exc: None)
    supply.submit(FetchQkdKeys(KeyPurpose.PAD_I2R, 1, 1024))
    await asyncio.sleep(0.01)  # in flight
    supply.submit(FetchQkdKeys(KeyPurpose.PAD_I2R, 1, 1024))
    supply.submit(FetchQkdKeys(KeyPurpose.PAD_R2I, 2, 1024))
    while len(kme.requests) < 2 or supply.pending or supply._in_request:
        await asyncio.sleep(0.01)
    assert kme.requests[:2] == [(1, 1024), (3, 1024)]
    acc = call.initiator.key_accounting()
    assert acc.fetched >= 4 * 1024
    assert supply.latency_s is not None and supply.latency_s > 0
    horizon = call.initiator.pad_horizon_s
    assert horizon is not None and horizon > 0.5  # the lookahead grew by the latency
    call.initiator.close()
    await supply.aclose()
