"""Real aiortc connections on 127.0.0.1: in one process and across two processes."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import itertools
import json
import os
import re
import signal
import sys
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

from qphone.core.impairment import ImpairmentParams
from qphone.core.signalmessage import SignalKind, SignalMessage
from qphone.measure.impairmentfilter import ImpairmentFilter
from qphone.transport.aiortchooks import decoder_running
from qphone.transport.calltransport import CallTransport
from qphone.transport.config import (
    LOOPBACK_ADDRESSES,
    MAX_CONTROL_BACKLOG,
    MAX_CONTROL_BYTES,
    MAX_PAYLOAD_BYTES,
    MediaPath,
    TransportConfig,
)
from qphone.transport.errors import TransportClosedError, TransportError
from qphone.transport.frames import ReceivedFrame, ReceiveFilter
from qphone.transport.signaling import SignalingListener, connect_signaling
from tests.support.paths import ROOT

HOST = "127.0.0.1"
PEER_SCRIPT = ROOT / "tests" / "support" / "echopeer.py"
FAST = TransportConfig(
    host_addresses=LOOPBACK_ADDRESSES,
    connect_timeout=5,
    signaling_timeout=5,
    peer_timeout=2,
    heartbeat_interval=0.2,
)


def config(**changes: Any) -> TransportConfig:
    return dataclasses.replace(FAST, **changes)


async def connect_pair(
    caller: CallTransport, answerer: CallTransport, port: int | None = None
) -> None:
    """Connect caller -> answerer directly (or via a relay listening on ``port``)."""
    async with await SignalingListener.open(HOST, 0) as listener:

        async def answer() -> None:
            await answerer.answer_on(await listener.accept(timeout=5))

        await asyncio.gather(answer(), caller.connect_as_caller(HOST, port or listener.port))


@contextlib.asynccontextmanager
async def pair(
    caller_config: TransportConfig = FAST,
    answerer_config: TransportConfig = FAST,
    answerer_filter: ReceiveFilter | None = None,
) -> AsyncIterator[tuple[CallTransport, CallTransport]]:
    caller = CallTransport(caller_config)
    answerer = CallTransport(answerer_config, receive_filter=answerer_filter)
    try:
        async with asyncio.timeout(10):
            await connect_pair(caller, answerer)
        yield caller, answerer
    finally:
        await caller.close()
        await answerer.close()


async def collect(transport: CallTransport, count: int, timeout: float = 5) -> list[ReceivedFrame]:
    frames: list[ReceivedFrame] = []
    async with asyncio.timeout(timeout):
        async for frame in transport.frames():
            frames.append(frame)
            if len(frames) == count:
                break
    return frames


async def send_frames(transport: CallTransport, payloads: list[bytes]) -> None:
    for i, payload in enumerate(payloads):
        transport.send_frame(payload, 960 * i)
        await asyncio.sleep(0.002)


def payloads(n: int, seed: int = 0) -> list[bytes]:
    return [os.urandom(1) + bytes([seed, i % 256]) * (20 + i % 60) for i in range(n)]


def sha256_prints(sdp: str) -> list[str]:
    return re.findall(r"a=fingerprint:sha-256 ([0-9A-F:]+)", sdp)


@pytest.mark.parametrize("media_path", [MediaPath.RTP, MediaPath.DATACHANNEL])
async def test_frames_arrive_identical_and_in_order(media_path: MediaPath) -> None:
    async with pair(config(media_path=media_path)) as (caller, answerer):
        sent = payloads(100)
        receiving = asyncio.ensure_future(collect(answerer, len(sent)))
        await send_frames(caller, sent)
        got = await receiving
        assert [f.payload for f in got] == sent
        seqs = [f.sequence for f in got]
        assert all((b - a) % 65536 == 1 for a, b in itertools.pairwise(seqs))
        stamps = [f.rtp_timestamp for f in got]
        assert all((b - a) % 2**32 == 960 for a, b in itertools.pairwise(stamps))
        assert all(a.arrival <= b.arrival for a, b in itertools.pairwise(got))
        stats = await answerer.stats()
        assert stats.media_path == media_path.value
        assert (stats.frames_received, stats.frames_lost, stats.duplicates) == (100, 0, 0)
        assert stats.bytes_received == sum(map(len, sent))
        assert (await caller.stats()).frames_sent == 100


async def test_both_directions_and_no_aiortc_decoding() -> None:
    async with pair() as (caller, answerer):
        a_to_b, b_to_a = payloads(30, 1), payloads(30, 2)
        rx_b = asyncio.ensure_future(collect(answerer, 30))
        rx_a = asyncio.ensure_future(collect(caller, 30))
        await asyncio.gather(send_frames(caller, a_to_b), send_frames(answerer, b_to_a))
        assert [f.payload for f in await rx_b] == a_to_b
        assert [f.payload for f in await rx_a] == b_to_a
        for transport in (caller, answerer):
            assert transport._pc is not None
            (transceiver,) = transport._pc.getTransceivers()
            assert not decoder_running(transceiver.receiver)
        assert not [t for t in threading.enumerate() if t.name == "audio-decoder"]


async def test_candidates_are_loopback_only() -> None:
    async with pair() as (caller, answerer):
        for transport in (caller, answerer):
            assert transport._pc is not None
            for sdp in (transport._pc.localDescription.sdp, transport._pc.remoteDescription.sdp):
                hosts = re.findall(r"a=candidate:\S+ \d+ udp \d+ (\S+) \d+ typ", sdp)
                assert hosts
                assert set(hosts) == {HOST}


async def test_control_messages_of_8kb_arrive_intact_in_order() -> None:
    async with pair() as (caller, answerer):
        messages = [os.urandom(8192) for _ in range(5)] + [os.urandom(MAX_CONTROL_BYTES)]
        for m in messages:
            caller.send_control(m)
        assert [await answerer.recv_control(timeout=5) for _ in messages] == messages
        answerer.send_control(b"reply")
        assert await caller.recv_control(timeout=5) == b"reply"
        with pytest.raises(ValueError, match="control messages"):
            caller.send_control(b"x" * (MAX_CONTROL_BYTES + 1))
        with pytest.raises(TimeoutError):
            await caller.recv_control(timeout=0.05)


async def test_channel_binding_equal_and_fingerprints_cross_match() -> None:
    async with pair() as (caller, answerer):
        assert caller.channel_binding() == answerer.channel_binding()
        assert len(caller.channel_binding()) == 32
        assert caller.local_fingerprints() == answerer.remote_fingerprints()
        assert answerer.local_fingerprints() == caller.remote_fingerprints()
        assert caller.local_fingerprints() != answerer.local_fingerprints()
        algorithms = {f.algorithm for f in caller.local_fingerprints()}
        assert algorithms == {"sha-256", "sha-384", "sha-512"}


async def test_stats_report_rtt() -> None:
    async with pair() as (caller, answerer):
        async with asyncio.timeout(5):
            while (await caller.stats()).rtt_s is None or (await answerer.stats()).rtt_s is None:
                await asyncio.sleep(0.05)
        stats = await caller.stats()
        assert stats.rtt_s is not None and stats.rtt_s > 0  # a measured round trip exists
        assert stats.state == "connected"


async def test_receive_filter_sees_every_frame_and_decides_delivery() -> None:
    impairment = ImpairmentFilter(ImpairmentParams(loss=0.2, duplicate=0.1, seed=5))
    async with pair(answerer_filter=impairment) as (caller, answerer):
        received: list[ReceivedFrame] = []
        answerer.set_frame_callback(received.append)
        await send_frames(caller, payloads(200))
        async with asyncio.timeout(5):
            while impairment.counters.offered < 200:
                await asyncio.sleep(0.02)
        counters = impairment.counters
        assert 10 < counters.dropped < 80
        assert counters.duplicated > 0
        assert len(received) == 200 - counters.dropped + counters.duplicated
        stats = await answerer.stats()
        assert stats.duplicates == counters.duplicated
        assert stats.frames_received + stats.frames_lost >= 195


async def test_send_rules() -> None:
    transport = CallTransport(FAST)
    with pytest.raises(TransportError, match="not connected"):
        transport.send_frame(b"x", 0)
    async with pair() as (caller, _answerer):
        with pytest.raises(ValueError, match="payload"):
            caller.send_frame(b"x" * (MAX_PAYLOAD_BYTES + 1), 0)
        with pytest.raises(ValueError, match="payload"):
            caller.send_frame(b"", 0)
        with pytest.raises(ValueError, match="timestamp"):
            caller.send_frame(b"x", -1)
        await caller.close()
        with pytest.raises(TransportClosedError):
            caller.send_frame(b"x", 0)
        with pytest.raises(TransportError, match="one call only"):
            await caller.connect_as_caller(HOST, 9)


async def test_peer_close_is_detected() -> None:
    async with pair() as (caller, answerer):
        frames = asyncio.ensure_future(collect(answerer, 10**6, timeout=10))
        await caller.close()
        async with asyncio.timeout(10):
            reason = await answerer.wait_closed()
        assert reason in ("the peer closed the connection",) or reason.startswith("peer vanished")
        assert await frames == []  # the frames() iterator ended
        with pytest.raises(TransportClosedError):
            await answerer.recv_control()


# ---------------------------------------------------------- relays in the middle


async def test_relay_swapping_fingerprints_yields_different_bindings() -> None:
    """A full man-in-the-middle: two DTLS legs, each with the relay's certificate."""
    caller, answerer = CallTransport(FAST), CallTransport(FAST)
    relay_in, relay_out = CallTransport(FAST), CallTransport(FAST)
    try:
        async with (
            asyncio.timeout(15),
            await SignalingListener.open(HOST, 0) as real,
            await SignalingListener.open(HOST, 0) as fake,
        ):

            async def answer(t: CallTransport, listener: SignalingListener) -> None:
                await t.answer_on(await listener.accept(timeout=5))

            await asyncio.gather(
                answer(answerer, real),
                relay_out.connect_as_caller(HOST, real.port),
                answer(relay_in, fake),
                caller.connect_as_caller(HOST, fake.port),
            )
        # Both legs work and the relay can forward media ...
        relay_in.set_frame_callback(lambda f: relay_out.send_frame(f.payload, 0))
        receiving = asyncio.ensure_future(collect(answerer, 5))
        await send_frames(caller, payloads(5))
        assert len(await receiving) == 5
        # ... but the endpoints' channel bindings differ, so the handshake fails.
        assert caller.channel_binding() != answerer.channel_binding()
        assert caller.channel_binding() == relay_in.channel_binding()
        assert answerer.channel_binding() == relay_out.channel_binding()
    finally:
        for t in (caller, answerer, relay_in, relay_out):
            await t.close()


async def test_tampered_fingerprint_in_signaling_is_detected() -> None:
    """A signaling relay rewrites the answerer's SDP fingerprints: DTLS fails, no binding."""
    caller = CallTransport(config(connect_timeout=3))
    answerer = CallTransport(config(connect_timeout=3))
    fake_print = ":".join(["AB"] * 32)

    async def relay(listener: SignalingListener, target_port: int) -> None:
        async with (
            await listener.accept(timeout=5) as down,
            await connect_signaling(HOST, target_port) as up,
        ):
            offer = await down.recv((SignalKind.OFFER,))
            await up.send(offer)
            answer = await up.recv((SignalKind.ANSWER,))
            tampered = answer.sdp
            for real_print in set(sha256_prints(answer.sdp)):
                tampered = tampered.replace(real_print, fake_print)
            assert tampered != answer.sdp
            await down.send(SignalMessage(SignalKind.ANSWER, sdp=tampered))

    async with (
        await SignalingListener.open(HOST, 0) as real,
        await SignalingListener.open(HOST, 0) as proxy,
    ):

        async def answer() -> None:
            await answerer.answer_on(await real.accept(timeout=5))

        results = await asyncio.wait_for(
            asyncio.gather(
                answer(),
                relay(proxy, real.port),
                caller.connect_as_caller(HOST, proxy.port),
                return_exceptions=True,
            ),
            timeout=15,
        )
    answer_result, relay_result, call_result = results
    assert relay_result is None
    assert isinstance(call_result, TransportError)
    assert "DTLS" in str(call_result)
    assert "fingerprint" in str(call_result)
    assert isinstance(answer_result, TransportError)
    for t in (caller, answerer):  # no DTLS session, no binding
        with pytest.raises(TransportError, match="no channel binding"):
            t.channel_binding()
    assert caller.state == answerer.state == "closed"


# ------------------------------------------------------------ two processes


@contextlib.asynccontextmanager
async def peer_process(
    media_path: MediaPath,
) -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(PEER_SCRIPT),
        media_path.value,
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=20)
        yield proc, int(json.loads(line)["port"])
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


@pytest.mark.parametrize("media_path", [MediaPath.RTP, MediaPath.DATACHANNEL])
async def test_two_processes_echo(media_path: MediaPath) -> None:
    async with peer_process(media_path) as (proc, port):
        caller = CallTransport(config(media_path=media_path))
        try:
            await asyncio.wait_for(caller.connect_as_caller(HOST, port), timeout=10)
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=10)
            assert json.loads(line)["binding"] == caller.channel_binding().hex()
            sent = payloads(60)
            echoed = asyncio.ensure_future(collect(caller, len(sent), timeout=10))
            await send_frames(caller, sent)
            got = await echoed
            assert [f.payload for f in got] == sent
            seqs = [f.sequence for f in got]
            assert all((b - a) % 65536 == 1 for a, b in itertools.pairwise(seqs))
            big = os.urandom(8192)
            caller.send_control(big)
            assert await caller.recv_control(timeout=5) == big
            caller.send_control(b"report")
            report = json.loads(await caller.recv_control(timeout=5))
            assert report["sha256"] == hashlib.sha256(b"".join(sent)).hexdigest()
            peer_seqs = report["sequences"]
            assert len(peer_seqs) == 60
            assert all((b - a) % 65536 == 1 for a, b in itertools.pairwise(peer_seqs))
        finally:
            await caller.close()
        await asyncio.wait_for(proc.wait(), timeout=10)


async def test_vanished_peer_process_is_detected() -> None:
    async with peer_process(MediaPath.RTP) as (proc, port):
        caller = CallTransport(config(peer_timeout=1.5, heartbeat_interval=0.2))
        try:
            await asyncio.wait_for(caller.connect_as_caller(HOST, port), timeout=10)
            caller.send_frame(b"hello", 0)
            proc.send_signal(signal.SIGKILL)  # no DTLS close_notify, no bye: just gone
            reason = await asyncio.wait_for(caller.wait_closed(), timeout=10)
            assert reason.startswith("peer vanished: nothing received for")
            assert caller.state == "closed"
        finally:
            await caller.close()


async def test_unread_control_flood_closes_transport() -> None:
    async with pair() as (caller, answerer):
        for i in range(MAX_CONTROL_BACKLOG + 10):
            caller.send_control(i.to_bytes(2, "big"))
        reason = await asyncio.wait_for(answerer.wait_closed(), timeout=10)
        assert "control messages that were not read" in reason
        # What was queued before the limit can still be read, in order.
        assert await answerer.recv_control() == (0).to_bytes(2, "big")
