"""Shared setup for core tests: two sessions after a real handshake, with an in-memory KME pair."""

from __future__ import annotations

from qphone.core.callparams import CallParams
from qphone.core.identity import Identity
from qphone.demo.inmemorycall import InMemoryCall, MemoryKmePair, handshake

ALICE = Identity.generate()
BOB = Identity.generate()


def make_call(params: CallParams, pad_lookahead_s: float | None = None) -> InMemoryCall:
    kme = MemoryKmePair()
    ini, res = handshake(ALICE, BOB, params, kme)
    call = InMemoryCall(ini, res, kme, pad_lookahead_s=pad_lookahead_s)
    call.pump()
    return call
