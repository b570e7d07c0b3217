"""Calls that must fail (or degrade) with a clear message on both sides, keys erased.

A real keyserver pair serves the tests that need it (the ETSI 014 client's own failure, an
answering ``qphone`` process); the others take their keys from an in-memory key source
(tests/support/memorykeysource.py).
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from qphone.config.pins import KnownPeers
from qphone.config.profile import Profile
from qphone.core.abort import AbortKind
from qphone.core.identity import Identity
from qphone.endpoint.endpoint import CallEndpoint
from qphone.endpoint.options import CallOptions
from qphone.endpoint.outcome import (
    CallFailed,
    ConnectionLost,
    EndCause,
    IdentityChanged,
    KeySupplyFailed,
    PeerAborted,
    PolicyRefused,
)
from qphone.endpoint.summary import CallSummary
from qphone.transport.calltransport import CallTransport
from qphone.transport.config import LOOPBACK_ADDRESSES, TransportConfig
from qphone.transport.signaling import SignalingListener
from tests.support.keyserverdemo import private_profile, private_profiles
from tests.support.memorykeysource import memory_profiles, sources
from tests.support.qphoneprocess import answering

pytestmark = pytest.mark.slow
HOST = "127.0.0.1"
LOOP = ["--ice-host", HOST]


def opts(**kw: object) -> CallOptions:
    base: dict[str, object] = {
        "transport": TransportConfig(host_addresses=LOOPBACK_ADDRESSES, connect_timeout=5),
        "status": False,
        "duration": 2.0,
    }
    base.update(kw)
    return CallOptions(**base)  # type: ignore[arg-type]


async def pair(a: CallEndpoint, b: CallEndpoint, port: int) -> tuple[object, object]:
    """a calls b (answering on ``port``); returns both results, summaries or exceptions."""
    answer = asyncio.ensure_future(b.answer(HOST, port, accept_timeout=20))
    await asyncio.sleep(0.3)
    results = await asyncio.gather(a.call(HOST, port), answer, return_exceptions=True)
    return results[0], results[1]


async def test_kme_unreachable_fails_closed_or_runs_pqc_only(
    keyserver_pair: Path, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    pa, pb = private_profiles(keyserver_pair, tmp_path)
    dead = replace(pa, kme_url=f"https://127.0.0.1:{free_port()}")
    # the key is asked for once the answerer took the call; the answerer hears why it ends
    ra, rb = await pair(
        CallEndpoint(dead, opts()), CallEndpoint(pb, opts(duration=None)), free_port()
    )
    assert isinstance(ra, KeySupplyFailed), ra
    assert re.search(r"unreachable.*--allow-pqc-only", str(ra)), ra
    assert isinstance(rb, PeerAborted) and "could not get a QKD key" in str(rb), rb
    a = CallEndpoint(dead, opts(allow_pqc_only=True))
    b = CallEndpoint(pb, opts(allow_pqc_only=True, duration=None))
    ra, rb = await pair(a, b, free_port())
    assert isinstance(ra, CallSummary) and isinstance(rb, CallSummary), (ra, rb)
    assert ra.pqc_only and rb.pqc_only and ra.sas == rb.sas
    assert ra.qkd_bits_consumed == 0 and ra.frames_received > 50
    assert any("PQC-only" in w for w in ra.warnings)
    assert a.end is not None and a.end.cause is EndCause.DURATION and not a.end.failed
    assert b.end is not None and b.end.cause is EndCause.PEER_BYE and not b.end.failed
    # without --allow-pqc-only the answering side refuses a PQC-only caller
    a = CallEndpoint(dead, opts(allow_pqc_only=True))
    b = CallEndpoint(pb, opts(duration=None))
    ra, rb = await pair(a, b, free_port())
    assert isinstance(rb, PolicyRefused) and "allow-pqc-only" in str(rb), rb
    assert rb.setting == "allow_pqc_only"
    assert isinstance(ra, PeerAborted) and "unauthenticated abort" in str(ra), ra
    assert ra.abort.kind is AbortKind.POLICY_REFUSED and "allow-pqc-only" in str(ra)
    assert b.summary().error == str(rb) and b.summary().end_reason == f"failed: {rb}"


def memory_endpoints(
    pa: Profile, pb: Profile, a_options: CallOptions, b_options: CallOptions
) -> tuple[CallEndpoint, CallEndpoint]:
    """alice and bob with their keys from one in-memory key network."""
    ka, kb = sources()
    return (
        CallEndpoint(pa, a_options, key_source=ka),
        CallEndpoint(pb, b_options, key_source=kb),
    )


async def test_wrong_peer_identity_refused(tmp_path: Path, free_port: Callable[[], int]) -> None:
    pa, pb = memory_profiles(tmp_path)
    KnownPeers(pa.known_peers).repin("bob", Identity.generate().public)  # a different bob
    a, b = memory_endpoints(pa, pb, opts(), opts(duration=None))
    ra, rb = await pair(a, b, free_port())
    assert isinstance(ra, IdentityChanged) and "IDENTITY OF bob CHANGED" in str(ra), ra
    # b has no authenticated evidence of anything: a neutral event, no identity advice
    assert isinstance(rb, PeerAborted) and rb.abort.kind is AbortKind.IDENTITY_REFUSED, rb
    assert "unauthenticated abort" in str(rb) and "--trust-new-identity" not in str(rb), rb
    assert a.session is None and b.session is None  # no key was ever put to use
    # after verifying out of band, the user re-pins explicitly
    a, b = memory_endpoints(pa, pb, opts(trust_new_identity=True), opts(duration=None))
    ra, rb = await pair(a, b, free_port())
    assert isinstance(ra, CallSummary) and ra.frames_received > 0
    assert ra.peer_pin == "changed" and any("Re-pinned" in w for w in ra.warnings)
    assert KnownPeers(pa.known_peers).pinned("bob") == b.identity.public
    # the live status line shows the call's state
    line = a.status_line()
    for part in (ra.sas, "epoch tx", "QKD", "RTT", "loss", "jb", "dBFS"):
        assert part in line, line


async def test_man_in_the_middle_relay_detected(
    tmp_path: Path, free_port: Callable[[], int]
) -> None:
    """A relay terminating DTLS on both legs and forwarding everything: the handshake fails."""
    pa, pb = memory_profiles(tmp_path)
    a, b = memory_endpoints(pa, pb, opts(), opts(duration=None))
    real, fake = free_port(), free_port()
    cfg = TransportConfig(host_addresses=LOOPBACK_ADDRESSES, connect_timeout=5)
    relay_in, relay_out = CallTransport(cfg), CallTransport(cfg)

    async def relay() -> None:
        async with await SignalingListener.open(HOST, fake) as listener:
            await asyncio.sleep(0.3)
            await relay_out.connect_as_caller(HOST, real)
            await relay_in.answer_on(await listener.accept(timeout=10))

        async def pump(src: CallTransport, dst: CallTransport) -> None:
            while True:
                dst.send_control(await src.recv_control())

        await asyncio.gather(pump(relay_in, relay_out), pump(relay_out, relay_in))

    answer = asyncio.ensure_future(b.answer(HOST, real, accept_timeout=20))
    mitm = asyncio.ensure_future(relay())
    try:
        await asyncio.sleep(0.2)
        ra = await asyncio.gather(a.call(HOST, fake), return_exceptions=True)
        rb = await asyncio.wait_for(asyncio.gather(answer, return_exceptions=True), 20)
    finally:
        mitm.cancel()
        await relay_in.close()
        await relay_out.close()
    assert isinstance(ra[0], CallFailed) and "man in the middle" in str(ra[0])
    assert isinstance(rb[0], CallFailed)
    assert a.session is None and b.session is None


async def test_peer_vanishes_mid_call(
    keyserver_pair: Path, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    pa, _ = private_profiles(keyserver_pair, tmp_path)
    port = free_port()
    bob, _ = answering(
        "--listen",
        f"{HOST}:{port}",
        "--profile",
        str(private_profile(keyserver_pair, "bob", tmp_path)),
        *LOOP,
    )
    try:
        a = CallEndpoint(pa, opts(duration=30))
        call = asyncio.ensure_future(a.call(HOST, port))
        for _ in range(100):
            if a.counters.frames_received > 25:
                break
            await asyncio.sleep(0.1)
        bob.send_signal(signal.SIGKILL)
        # the heartbeat notices the silence (not some longer ICE or SCTP timeout)
        with pytest.raises(ConnectionLost, match=r"connection lost \(peer vanished"):
            await asyncio.wait_for(call, 30)
        assert a.session is not None and a.session.closed  # keys erased
    finally:
        bob.kill()
        bob.wait()
