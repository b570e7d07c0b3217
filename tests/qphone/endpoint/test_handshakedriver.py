"""The handshake driver over a real aiortc connection on 127.0.0.1, with an in-memory KME pair.

Both sides complete with the same SAS; a side that refuses tells the other why (a typed abort)
before any key is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence

import pytest

from qphone.core.abort import AbortKind
from qphone.core.callparams import CallParams, Mode
from qphone.core.errors import PeerIdentityMismatch, ProposalRefused
from qphone.core.handshake import ResponderPolicy, Role
from qphone.core.identity import Identity
from qphone.core.qkd import QkdKey
from qphone.demo.inmemorycall import MemoryKmePair
from qphone.endpoint.handshakedriver import HandshakeDriver
from qphone.endpoint.outcome import KeySupplyFailed, PeerAborted
from qphone.kmeclient import KmeUnavailable
from qphone.transport.calltransport import CallTransport
from qphone.transport.config import LOOPBACK_ADDRESSES, TransportConfig
from qphone.transport.signaling import SignalingListener

CONFIG = TransportConfig(host_addresses=LOOPBACK_ADDRESSES, connect_timeout=5)
ALICE, BOB = Identity.generate(), Identity.generate()


@contextlib.asynccontextmanager
async def connected() -> AsyncIterator[tuple[CallTransport, CallTransport]]:
    caller, answerer = CallTransport(CONFIG), CallTransport(CONFIG)
    try:
        async with asyncio.timeout(15), await SignalingListener.open("127.0.0.1", 0) as listener:

            async def answer() -> None:
                await answerer.answer_on(await listener.accept(timeout=10))

            await asyncio.gather(answer(), caller.connect_as_caller("127.0.0.1", listener.port))
        yield caller, answerer
    finally:
        await caller.close()
        await answerer.close()


async def test_both_sides_complete_with_the_same_sas() -> None:
    kme = MemoryKmePair()
    params = CallParams(mode=Mode.OTP)

    async def resolve(ids: Sequence[uuid.UUID]) -> list[QkdKey]:
        return kme.dec_keys(list(ids))

    async with connected() as (caller, answerer):
        ini, res = await asyncio.gather(
            HandshakeDriver(caller, ALICE).initiate(
                params, kme.enc_keys(1, params.handshake_qkd_bits), BOB.public
            ),
            HandshakeDriver(answerer, BOB).respond(
                ResponderPolicy(expected_peer=ALICE.public), resolve
            ),
        )
    assert ini.sas == res.sas and ini.params == res.params == params
    assert (ini.role, res.role) == (Role.INITIATOR, Role.RESPONDER)
    assert ini.peer == BOB.public and res.peer == ALICE.public


@pytest.mark.parametrize(
    ("policy", "refusal", "kind"),
    [
        (ResponderPolicy(required_mode=Mode.OTP), ProposalRefused, AbortKind.POLICY_REFUSED),
        (
            ResponderPolicy(expected_peer=Identity.generate().public),
            PeerIdentityMismatch,
            AbortKind.IDENTITY_REFUSED,
        ),
    ],
)
async def test_a_refusal_reaches_the_caller_as_a_typed_abort(
    policy: ResponderPolicy, refusal: type[Exception], kind: AbortKind
) -> None:
    kme = MemoryKmePair()

    async def resolve(ids: Sequence[uuid.UUID]) -> list[QkdKey]:
        return kme.dec_keys(list(ids))

    async with connected() as (caller, answerer):
        ini, res = await asyncio.gather(
            HandshakeDriver(caller, ALICE).initiate(CallParams(), kme.enc_keys(1, 256), None),
            HandshakeDriver(answerer, BOB).respond(policy, resolve),
            return_exceptions=True,
        )
    assert isinstance(res, refusal), res
    assert isinstance(ini, PeerAborted) and ini.abort.kind is kind, ini
    if refusal is ProposalRefused:  # the refusal and the caller's option that would be taken
        assert ini.abort.reason == f"{res}: call with --mode otp"
    else:
        assert ini.abort.reason == str(res)


async def test_a_kme_failure_on_the_answering_side_is_a_key_supply_failure() -> None:
    kme = MemoryKmePair()

    async def resolve(ids: Sequence[uuid.UUID]) -> list[QkdKey]:
        raise KmeUnavailable("KME at https://127.0.0.1:1 unreachable")

    async with connected() as (caller, answerer):
        ini, res = await asyncio.gather(
            HandshakeDriver(caller, ALICE).initiate(CallParams(), kme.enc_keys(1, 256), None),
            HandshakeDriver(answerer, BOB).respond(ResponderPolicy(), resolve),
            return_exceptions=True,
        )
    assert isinstance(res, KeySupplyFailed) and "could not resolve the QKD keys" in str(res)
    assert isinstance(ini, PeerAborted) and ini.abort.kind is AbortKind.FAILED
