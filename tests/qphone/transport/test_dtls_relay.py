"""A relay that terminates DTLS on both legs, with the SDP fingerprint trick (real aiortc).

The relay runs two RTCPeerConnections (one toward each end, as two CallTransports) and forwards
the control channel and RTP between them. It rewrites the SDP on both signaling hops: the audio
section (the one aiortc checks the DTLS certificate against) carries only the relay's own
sha-384 fingerprint, the application section the real peer's sha-256 one. aiortc accepts that;
a binding over "the sha-256 fingerprint of the SDP" would then be equal at both ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import Callable, Sequence

import pytest

import qphone.transport.calltransport as calltransport
from qphone.core.callparams import CallParams
from qphone.core.channelbinding import Fingerprint
from qphone.core.errors import HandshakeFailed
from qphone.core.handshake import ResponderPolicy
from qphone.core.identity import Identity
from qphone.core.qkd import QkdKey
from qphone.core.signalmessage import SignalKind, SignalMessage
from qphone.demo.inmemorycall import MemoryKmePair
from qphone.endpoint.handshakedriver import HandshakeDriver
from qphone.endpoint.outcome import PeerAborted
from qphone.transport.calltransport import CallTransport
from qphone.transport.config import LOOPBACK_ADDRESSES, TransportConfig
from qphone.transport.frames import ReceivedFrame
from qphone.transport.sdp import section_fingerprints
from qphone.transport.signaling import SignalingListener, SignalingMessageError, connect_signaling

HOST = "127.0.0.1"
FAST = TransportConfig(
    host_addresses=LOOPBACK_ADDRESSES,
    connect_timeout=5,
    signaling_timeout=5,
    peer_timeout=3,
    heartbeat_interval=0.2,
)
ALICE, BOB = Identity.generate(), Identity.generate()
DUMMY_SHA256 = ":".join(["5A"] * 32)


def print_of(sdp: str, algorithm: str) -> str:
    match = re.search(rf"a=fingerprint:{algorithm} ([0-9A-F:]+)", sdp)
    assert match is not None, sdp
    return match.group(1)


def split_fingerprints(sdp: str, audio: str, application: str) -> str:
    """``sdp`` with each m-section's fingerprint lines replaced by the one given for its kind."""
    head, *sections = re.split(r"(?m)^(?=m=)", sdp)
    out = [head]
    for section in sections:
        kind = section[2 : section.index(" ")]
        lines = [x for x in section.splitlines(keepends=True) if not x.startswith("a=fingerprint")]
        at = next(i for i, x in enumerate(lines) if x.startswith("a=setup:"))
        lines.insert(at, f"a=fingerprint:{audio if kind == 'audio' else application}\r\n")
        out.append("".join(lines))
    return "".join(out)


class SplitFingerprintRelay:
    """caller <-> [inside | relay | outside] <-> answerer, DTLS terminated on both legs."""

    def __init__(self) -> None:
        self.inside = CallTransport(FAST)  # answers the caller
        self.outside = CallTransport(FAST)  # calls the answerer
        self.forwarded_control = 0
        self._caller_print: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._answerer_print: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pumps: list[asyncio.Task[None]] = []

    async def connect(self, caller_listener: SignalingListener, answerer_port: int) -> None:
        """Run both legs' set-up; raises what the relay's own transports raise."""
        results = await asyncio.gather(
            self._leg_to_caller(caller_listener),
            self._leg_to_answerer(answerer_port),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _leg_to_caller(self, caller_listener: SignalingListener) -> None:
        async with await SignalingListener.open(HOST, 0) as inner:

            async def proxy() -> None:
                async with (
                    await caller_listener.accept(timeout=5) as down,
                    await connect_signaling(HOST, inner.port) as up,
                ):
                    offer = await down.recv((SignalKind.OFFER,))
                    self._caller_print.set_result(print_of(offer.sdp, "sha-256"))
                    await up.send(offer)
                    answer = await up.recv((SignalKind.ANSWER,))
                    # the answerer's real print, if it answered the outside leg at all
                    real = await self._answerer_print
                    forged = split_fingerprints(
                        answer.sdp,
                        audio=f"sha-384 {print_of(answer.sdp, 'sha-384')}",
                        application=f"sha-256 {real}",
                    )
                    await down.send(SignalMessage(SignalKind.ANSWER, sdp=forged))

            async def inside() -> None:
                await self.inside.answer_on(await inner.accept(timeout=5))

            await asyncio.gather(proxy(), inside())

    async def _leg_to_answerer(self, answerer_port: int) -> None:
        async with await SignalingListener.open(HOST, 0) as inner:

            async def proxy() -> None:
                try:
                    async with (
                        await inner.accept(timeout=5) as down,
                        await connect_signaling(HOST, answerer_port) as up,
                    ):
                        offer = await down.recv((SignalKind.OFFER,))
                        forged = split_fingerprints(
                            offer.sdp,
                            audio=f"sha-384 {print_of(offer.sdp, 'sha-384')}",
                            application=f"sha-256 {await self._caller_print}",
                        )
                        await up.send(SignalMessage(SignalKind.OFFER, sdp=forged))
                        reply = await up.recv((SignalKind.ANSWER, SignalKind.REJECT))
                        if reply.kind is SignalKind.ANSWER:
                            self._answerer_print.set_result(print_of(reply.sdp, "sha-256"))
                        await down.send(reply)
                finally:
                    if not self._answerer_print.done():  # refused: any print will do for the
                        self._answerer_print.set_result(DUMMY_SHA256)  # caller's leg

            await asyncio.gather(proxy(), self.outside.connect_as_caller(HOST, inner.port))

    def forward(self) -> None:
        """Forward control messages and media frames both ways from now on."""

        def frames(dst: CallTransport) -> Callable[[ReceivedFrame], None]:
            def on_frame(frame: ReceivedFrame) -> None:
                with contextlib.suppress(Exception):
                    dst.send_frame(frame.payload, frame.rtp_timestamp)

            return on_frame

        self.inside.set_frame_callback(frames(self.outside))
        self.outside.set_frame_callback(frames(self.inside))

        async def pump(src: CallTransport, dst: CallTransport) -> None:
            while True:
                dst.send_control(await src.recv_control())
                self.forwarded_control += 1

        self._pumps = [
            asyncio.ensure_future(pump(self.inside, self.outside)),
            asyncio.ensure_future(pump(self.outside, self.inside)),
        ]

    async def close(self) -> None:
        for task in self._pumps:
            task.cancel()
        await self.inside.close()
        await self.outside.close()


async def call_through_relay(
    caller: CallTransport, answerer: CallTransport, relay: SplitFingerprintRelay
) -> tuple[object, object, object]:
    async with (
        asyncio.timeout(20),
        await SignalingListener.open(HOST, 0) as real,
        await SignalingListener.open(HOST, 0) as fake,
    ):

        async def answer() -> None:
            await answerer.answer_on(await real.accept(timeout=5))

        answered, relayed, called = await asyncio.gather(
            answer(),
            relay.connect(fake, real.port),
            caller.connect_as_caller(HOST, fake.port),
            return_exceptions=True,
        )
    return answered, relayed, called


async def qphone_handshake(caller: CallTransport, answerer: CallTransport) -> tuple[object, object]:
    kme = MemoryKmePair()

    async def resolve(ids: Sequence[uuid.UUID]) -> list[QkdKey]:
        return kme.dec_keys(list(ids))

    ini, res = await asyncio.wait_for(
        asyncio.gather(
            HandshakeDriver(caller, ALICE).initiate(CallParams(), kme.enc_keys(1, 256), None),
            HandshakeDriver(answerer, BOB).respond(ResponderPolicy(), resolve),
            return_exceptions=True,
        ),
        20,
    )
    return ini, res


def test_the_forged_sdp_is_what_aiortc_would_accept() -> None:
    """The rewrite keeps every other line: only the fingerprints differ between sections."""
    sdp = (
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n"
        f"a=fingerprint:sha-256 {':'.join(['01'] * 32)}\r\n"
        f"a=fingerprint:sha-384 {':'.join(['02'] * 48)}\r\na=setup:actpass\r\n"
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\n"
        f"a=fingerprint:sha-256 {':'.join(['01'] * 32)}\r\n"
        f"a=fingerprint:sha-384 {':'.join(['02'] * 48)}\r\na=setup:actpass\r\n"
    )
    forged = split_fingerprints(sdp, f"sha-384 {':'.join(['0F'] * 48)}", f"sha-256 {DUMMY_SHA256}")
    audio, application = section_fingerprints(forged)
    assert audio == [Fingerprint("sha-384", b"\x0f" * 48)]
    assert application == [Fingerprint("sha-256", b"\x5a" * 32)]


async def test_relay_with_its_sha384_print_in_the_audio_section_is_refused_by_both_ends() -> None:
    caller, answerer = CallTransport(FAST), CallTransport(FAST)
    relay = SplitFingerprintRelay()
    try:
        answered, relayed, called = await call_through_relay(caller, answerer, relay)
        if not any(isinstance(r, BaseException) for r in (answered, relayed, called)):
            relay.forward()
            ini, res = await qphone_handshake(caller, answerer)
            sas = [getattr(r, "sas", r) for r in (ini, res)]
            pytest.fail(
                f"connected through a DTLS-terminating relay; the handshake gave SAS {sas}, "
                f"the relay forwarded {relay.forwarded_control} control messages"
            )
        # the answerer refuses the forged offer and says so to whoever sent it
        assert isinstance(answered, SignalingMessageError), answered
        assert "m-section 1 differ" in str(answered), answered
        assert isinstance(relayed, Exception), relayed  # neither of its legs came up
        # the caller refuses the forged answer
        assert isinstance(called, SignalingMessageError), called
        assert "m-section 1 differ" in str(called), called
        assert caller.state == answerer.state == "closed"
    finally:
        await relay.close()
        await caller.close()
        await answerer.close()


async def test_binding_from_the_dtls_session_differs_even_with_a_lenient_sdp_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Were the SDP check as lenient as aiortc's (only the first m-section counts), the relay
    would connect, but the channel bindings come from two different DTLS sessions: the qphone
    handshake through it fails, and the answering side is told so."""

    def first_section_only(sdp: str) -> tuple[Fingerprint, ...]:
        return tuple(section_fingerprints(sdp)[0])

    monkeypatch.setattr(calltransport, "checked_fingerprints", first_section_only)
    caller, answerer = CallTransport(FAST), CallTransport(FAST)
    relay = SplitFingerprintRelay()
    try:
        results = await call_through_relay(caller, answerer, relay)
        assert results == (None, None, None), results
        relay.forward()
        assert caller.channel_binding() != answerer.channel_binding()
        assert caller.channel_binding() == relay.inside.channel_binding()
        assert answerer.channel_binding() == relay.outside.channel_binding()
        ini, res = await qphone_handshake(caller, answerer)
        assert isinstance(ini, HandshakeFailed) and "man in the middle" in str(ini), ini
        assert isinstance(res, PeerAborted), res
        assert relay.forwarded_control >= 3  # ClientHello, ServerHello, the caller's abort
    finally:
        await relay.close()
        await caller.close()
        await answerer.close()
