"""Attacks on a running call, in-process: real aiortc on 127.0.0.1, an in-memory key source.

Each test plays the attacker at the place the attack lives: on the control channel (forged
aborts and messages, suppressed confirmations), on the media path (a splice), in the KME's
replies (a wrong-size key, from a key source that shortens them), or in the caller's proposal
(parameters outside the answerer's policy).  The keys come from the endpoints' in-memory key
source (tests/support/memorykeysource.py): a real KME would add nothing to these.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from qphone.config.profile import Policy, Profile
from qphone.core.abort import Abort, AbortKind
from qphone.core.callparams import Mode
from qphone.core.qkd import QkdKey
from qphone.endpoint.endpoint import CallEndpoint
from qphone.endpoint.keysource import KeySource
from qphone.endpoint.options import CallOptions
from qphone.endpoint.outcome import (
    EndCause,
    KeySupplyFailed,
    OutOfKey,
    PeerAborted,
    PeerFailed,
    PolicyRefused,
)
from qphone.endpoint.state import CallPhase
from qphone.endpoint.summary import CallSummary
from qphone.kmeclient import KmeStatus
from qphone.transport.config import LOOPBACK_ADDRESSES, TransportConfig
from qphone.transport.frames import RawFrame
from tests.support.memorykeysource import memory_profiles, sources

pytestmark = pytest.mark.slow
HOST = "127.0.0.1"
ESC = "\x1b"


def opts(**kw: object) -> CallOptions:
    base: dict[str, object] = {
        "transport": TransportConfig(host_addresses=LOOPBACK_ADDRESSES, connect_timeout=5),
        "status": False,
        "duration": 4.0,
    }
    base.update(kw)
    return CallOptions(**base)  # type: ignore[arg-type]


def endpoints(
    pa: Profile,
    pb: Profile,
    a_options: CallOptions,
    b_options: CallOptions,
    b_source: Callable[[KeySource], KeySource] | None = None,
    **b_kw: Any,
) -> tuple[CallEndpoint, CallEndpoint]:
    """alice and bob on one in-memory key network; ``b_source`` may wrap bob's key source."""
    ka, kb = sources()
    a = CallEndpoint(pa, a_options, key_source=ka)
    b = CallEndpoint(pb, b_options, key_source=b_source(kb) if b_source else kb, **b_kw)
    return a, b


async def pair(
    a: CallEndpoint, b: CallEndpoint, port: int, during: Callable[[], object] | None = None
) -> tuple[object, object]:
    """a calls b; ``during()`` (a coroutine function) runs once both are in the call."""
    answer = asyncio.ensure_future(b.answer(HOST, port, accept_timeout=20))
    await asyncio.sleep(0.3)
    call = asyncio.ensure_future(a.call(HOST, port))
    if during is not None:
        await asyncio.wait_for(b.phase.wait_for(CallPhase.IN_CALL), 30)
        await a.phase.wait_for(CallPhase.IN_CALL)
        await during()  # type: ignore[misc]
    results = await asyncio.wait_for(asyncio.gather(call, answer, return_exceptions=True), 60)
    return results[0], results[1]


async def test_a_forged_abort_or_control_message_mid_call_is_ignored_and_counted(
    tmp_path: Path, free_port: Callable[[], int]
) -> None:
    """An abort (with identity words and terminal escapes) and a message that fails its MAC,
    sent on the control channel after keys exist: they end nothing; the call goes on."""
    pa, pb = memory_profiles(tmp_path)
    a, b = endpoints(pa, pb, opts(), opts(duration=None))

    async def inject() -> None:
        for _ in range(100):
            if b.counters.frames_received > 20:
                break
            await asyncio.sleep(0.05)
        forged = Abort(
            AbortKind.IDENTITY_REFUSED,
            f"{ESC}[2J{ESC}[31mthe peer refused this terminal's identity: use "
            f"--trust-new-identity{ESC}]0;owned\x07",
        )
        a.transport.send_control(forged.encode())
        a.transport.send_control(b"\x05" + bytes(40))  # a "bye" without a valid MAC

    ra, rb = await pair(a, b, free_port(), inject)
    assert isinstance(ra, CallSummary) and isinstance(rb, CallSummary), (ra, rb)
    assert rb.control_ignored == 2 and rb.error is None
    assert b.end is not None and b.end.cause is EndCause.PEER_BYE and not b.end.failed
    assert a.end is not None and a.end.cause is EndCause.DURATION
    warning = next(w for w in rb.warnings if "ignored an unauthenticated message" in w)
    assert ESC not in warning and "\\x1b" in warning
    assert rb.frames_received > 150  # the call carried on to the end


class ShortKeys:
    """A faulty KME behind the key-source protocol: after the handshake's key, dec_keys hands
    back each key cut to half its length."""

    def __init__(self, inner: KeySource) -> None:
        self.inner = inner
        self.url = inner.url
        self.resolves = 0

    async def status(self, slave_sae_id: str) -> KmeStatus:
        return await self.inner.status(slave_sae_id)

    async def enc_keys(
        self, slave_sae_id: str, number: int = 1, size_bits: int | None = None
    ) -> list[QkdKey]:
        return await self.inner.enc_keys(slave_sae_id, number, size_bits)

    async def dec_keys(self, master_sae_id: str, key_ids: Sequence[uuid.UUID]) -> list[QkdKey]:
        self.resolves += 1
        keys = await self.inner.dec_keys(master_sae_id, key_ids)
        if self.resolves == 1:  # the handshake's key is fine
            return keys
        return [QkdKey(k.key_id, k.material[: len(k.material) // 2]) for k in keys]

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_wrong_size_key_from_the_kme_mid_call_fails_closed(
    tmp_path: Path, free_port: Callable[[], int]
) -> None:
    """The answerer's KME hands back a 128-bit key for a 256-bit epoch block: the key supply
    worker used to die silently while the call went on with stale keys."""
    pa, pb = memory_profiles(tmp_path)
    a, b = endpoints(
        pa, pb, opts(duration=10.0, rotate_seconds=0.5), opts(duration=None), b_source=ShortKeys
    )
    ra, rb = await pair(a, b, free_port())
    assert isinstance(rb, KeySupplyFailed) and "cannot use" in str(rb), rb
    assert b.summary().error == str(rb)
    assert isinstance(ra, PeerFailed) and "cannot use" in str(ra), ra
    assert a.session is not None and a.session.closed
    assert b.session is not None and b.session.closed


async def test_suppressed_epoch_confirmations_end_the_call_after_the_overdue_limit(
    tmp_path: Path, free_port: Callable[[], int]
) -> None:
    """Whoever controls the control channel drops everything the answerer sends during the
    call (its EpochReady among it): the caller used to stay on its epoch for the whole call."""
    pa, pb = memory_profiles(tmp_path)
    a, b = endpoints(pa, pb, opts(duration=30.0, rotate_seconds=0.5), opts(duration=None))
    send = b.transport.send_control
    dropped = 0

    def drop_during_the_call(data: bytes) -> None:
        nonlocal dropped
        if b.session is None:  # the handshake goes through
            send(data)
        else:
            dropped += 1

    b.transport.send_control = drop_during_the_call  # type: ignore[method-assign]
    ra, rb = await pair(a, b, free_port())
    assert isinstance(ra, OutOfKey) and "rotation could not complete" in str(ra), ra
    assert "overdue" in str(ra) and a.summary().error == str(ra)
    assert dropped >= 1
    assert a.session is not None and a.session.closed
    # the caller's failing bye reaches the answerer (only its own messages were dropped)
    assert isinstance(rb, PeerFailed), rb
    assert a.counters.epochs_tx == []  # never rotated: nothing was confirmed


async def test_calls_outside_the_answerers_policy_are_refused_naming_the_setting(
    tmp_path: Path, free_port: Callable[[], int]
) -> None:
    """The answerer used to accept any in-range parameters the caller signed (32-bit tags,
    24-hour epochs); now its profile's [policy] decides, with safe defaults."""
    pa, pb = memory_profiles(tmp_path)
    weak = {
        "min_otp_tag_bits": opts(mode=Mode.OTP, otp_tag_bits=32),
        "max_epoch_seconds": opts(rotate_seconds=86_400.0, rotate_frames=1 << 30),
        "max_epoch_frames": opts(rotate_frames=100_000),
    }
    for setting, caller_options in weak.items():
        a, b = endpoints(pa, pb, caller_options, opts(duration=None))
        ra, rb = await pair(a, b, free_port())
        assert isinstance(rb, PolicyRefused) and rb.setting == setting, rb
        assert f"[policy] {setting} in {pb.source}" in str(rb), rb
        assert b.summary().error == str(rb) and b.session is None
        # the caller is told, in neutral words (the abort is unauthenticated)
        assert isinstance(ra, PeerAborted) and ra.abort.kind is AbortKind.POLICY_REFUSED, ra
        assert "claims 'call outside policy'" in str(ra) and a.session is None
    # an answerer whose profile allows 32-bit tags takes the call
    loose = replace(pb, policy=Policy(min_otp_tag_bits=32))
    a, b = endpoints(
        pa, loose, opts(mode=Mode.OTP, otp_tag_bits=32, duration=2.0), opts(duration=None)
    )
    ra, rb = await pair(a, b, free_port())
    assert isinstance(ra, CallSummary) and isinstance(rb, CallSummary), (ra, rb)
    assert rb.frames_received > 0 and ra.error is None


class Splicer:
    """On the answerer's media path: holds frames 50..59 and sends them again with the RTP
    sequence numbers and timestamps of frames 100..109, which it drops (a cut-and-paste)."""

    def __init__(self) -> None:
        self._deliver: Callable[[RawFrame], None] = lambda frame: None
        self._count = 0
        self._held: list[RawFrame] = []

    def start(self, deliver: Callable[[RawFrame], None]) -> None:
        self._deliver = deliver

    def offer(self, frame: RawFrame) -> None:
        i, self._count = self._count, self._count + 1
        if 50 <= i < 60:
            self._held.append(frame)
        elif 100 <= i < 110:
            held = self._held[i - 100]
            self._deliver(RawFrame(held.payload, frame.sequence, frame.timestamp))
        else:
            self._deliver(frame)

    def close(self) -> None:
        self._held.clear()


@pytest.mark.parametrize("mode", [Mode.AES, Mode.OTP])
async def test_a_splice_on_the_media_path_is_dropped_and_counted(
    tmp_path: Path, free_port: Callable[[], int], mode: Mode
) -> None:
    pa, pb = memory_profiles(tmp_path)
    a, b = endpoints(
        pa, pb, opts(mode=mode, duration=4.0), opts(duration=None), receive_filter=Splicer()
    )
    ra, rb = await pair(a, b, free_port())
    assert isinstance(ra, CallSummary) and isinstance(rb, CallSummary), (ra, rb)
    assert rb.frames_misplaced == 10, rb
    assert rb.frames_received >= ra.frames_sent - 25
    assert any("disagrees with its authenticated position" in w for w in rb.warnings)
    assert ra.frames_misplaced == 0 and rb.error is None
