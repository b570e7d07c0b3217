"""The endpoint takes its keys from the key source it is given (the KeySource protocol): what
each side asks of it and when, and that it is closed once the call is over.

Real calls on 127.0.0.1 (aiortc), keys from an in-memory key source whose log of requests is the
observation (tests/support/memorykeysource.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from qphone.core.callparams import Mode
from qphone.endpoint.endpoint import CallEndpoint
from qphone.endpoint.options import CallOptions
from qphone.endpoint.outcome import CallFailed, ModeRefused
from qphone.endpoint.summary import CallSummary
from qphone.transport.config import LOOPBACK_ADDRESSES, TransportConfig
from tests.support.memorykeysource import MemoryKms, memory_profiles

pytestmark = pytest.mark.slow
HOST = "127.0.0.1"


def opts(**kw: object) -> CallOptions:
    base: dict[str, object] = {
        "transport": TransportConfig(host_addresses=LOOPBACK_ADDRESSES, connect_timeout=5),
        "status": False,
    }
    base.update(kw)
    return CallOptions(**base)  # type: ignore[arg-type]


async def pair(a: CallEndpoint, b: CallEndpoint, port: int) -> tuple[object, object]:
    answer = asyncio.ensure_future(b.answer(HOST, port, accept_timeout=4))
    await asyncio.sleep(0.3)
    results = await asyncio.gather(a.call(HOST, port), answer, return_exceptions=True)
    return results[0], results[1]


async def test_the_caller_takes_keys_the_answerer_resolves_and_both_close_their_source(
    tmp_path: Path, free_port: Callable[[], int]
) -> None:
    pa, pb = memory_profiles(tmp_path)
    kms = MemoryKms()
    ka, kb = kms.source("alice"), kms.source("bob")
    a = CallEndpoint(pa, opts(duration=1.5, rotate_seconds=0.5), key_source=ka)
    b = CallEndpoint(pb, opts(), key_source=kb)
    ra, rb = await pair(a, b, free_port())
    assert isinstance(ra, CallSummary) and isinstance(rb, CallSummary), (ra, rb)
    # the caller (ETSI 014 master): its status, the handshake's key, the epochs' keys, and its
    # status again for the route report; the answerer (slave) only resolves what was announced
    assert ka.calls[:2] == ["status", "enc_keys"] and ka.calls[-1] == "status", ka.calls
    assert ka.calls.count("enc_keys") >= 2 and set(kb.calls) == {"dec_keys"}, (ka.calls, kb.calls)
    assert ka.closed and kb.closed
    assert ra.keys.drawn == kms.pair.issued_bits >= rb.keys.drawn > 0
    assert ra.epochs >= 2 and ra.sas == rb.sas


async def test_a_call_refused_before_the_handshake_draws_no_key(
    tmp_path: Path, free_port: Callable[[], int]
) -> None:
    """An answerer that takes OTP calls only refuses an AES call at signaling: the caller never
    asked its key source for anything, and still closed it."""
    pa, pb = memory_profiles(tmp_path)
    kms = MemoryKms()
    ka, kb = kms.source("alice"), kms.source("bob")
    a = CallEndpoint(pa, opts(mode=Mode.AES, duration=1.0), key_source=ka)
    b = CallEndpoint(pb, opts(mode=Mode.OTP), key_source=kb)
    ra, rb = await pair(a, b, free_port())
    assert isinstance(ra, ModeRefused), ra
    assert isinstance(rb, CallFailed), rb  # nobody else called before its accept timeout
    assert ka.calls == [] and kb.calls == [] and kms.pair.issued_bits == 0
    assert ka.closed and kb.closed
