"""SAS grinding against the commitment: a man in the middle gets one SAS guess per attempt.

A MITM runs two handshakes, playing responder toward the caller and initiator toward the
answerer, and needs the two SAS to match. Playing initiator, it used to re-randomise its
ClientFinish signature (ML-DSA-65 signs with fresh randomness; Ed25519's nonce can be chosen
too) after seeing the ServerHello, each try a new SAS, and pick the one it wanted.
"""

from __future__ import annotations

import copy
import os
import uuid

import pytest

from qphone.core.callparams import CallParams
from qphone.core.errors import HandshakeFailed
from qphone.core.events import HandshakeComplete, SendControl
from qphone.core.handshake import (
    ClientFinish,
    ClientHello,
    Initiator,
    Responder,
    derive_sas,
    sas_commitment,
)
from qphone.core.identity import Identity
from qphone.core.qkd import QkdKey

MALLORY, BOB = Identity.generate(), Identity.generate()
BINDING = b"B" * 32
TRIES = 16


def up_to_server_hello() -> tuple[Initiator, Responder, bytes]:
    key = QkdKey(uuid.uuid4(), os.urandom(32))
    ini = Initiator(MALLORY, CallParams(), [key], BINDING)
    res = Responder(BOB, BINDING)
    res.receive(ini.start())
    reply = res.provide_qkd_keys([key])[0]
    assert isinstance(reply, SendControl)
    return ini, res, reply.data


def finish(ini: Initiator, sh: bytes) -> tuple[bytes, str]:
    out = ini.receive(sh)
    assert isinstance(out[0], SendControl) and isinstance(out[1], HandshakeComplete)
    return out[0].data, out[1].result.sas


def test_re_randomising_the_client_finish_gives_no_new_sas() -> None:
    """One ClientHello, one ServerHello: many valid ClientFinish messages, one SAS."""
    ini, res, sh = up_to_server_hello()
    finishes, seen_by_answerer = set(), set()
    for _ in range(TRIES):
        fin, sas_at_mitm = finish(copy.deepcopy(ini), sh)
        done = copy.deepcopy(res).receive(fin)[0]
        assert isinstance(done, HandshakeComplete)  # the answerer accepts every one of them
        assert done.result.sas == sas_at_mitm
        finishes.add(fin)
        seen_by_answerer.add(done.result.sas)
    assert len(finishes) == TRIES  # distinct, valid messages ...
    assert len(seen_by_answerer) == 1  # ... and still a single SAS: no grinding


def test_the_committed_nonce_cannot_be_swapped_after_the_server_hello() -> None:
    ini, res, sh = up_to_server_hello()
    cheat = copy.deepcopy(ini)
    cheat._sas_nonce = os.urandom(32)  # a valid ClientFinish around another nonce
    fin, _ = finish(cheat, sh)
    with pytest.raises(HandshakeFailed, match="does not match the commitment"):
        res.receive(fin)
    assert res.closed


def test_the_responder_cannot_compute_the_sas_before_the_client_finish() -> None:
    """The SAS depends on the nonce, and the ClientHello shows only its hash: a MITM playing
    responder picks its ServerHello without being able to predict the SAS it leads to."""
    ini, res, sh = up_to_server_hello()
    ch = ini._hello
    fin, sas = finish(copy.deepcopy(ini), sh)
    nonce = ClientFinish.decode(fin).sas_nonce
    assert ClientHello.decode(ch).sas_commitment == sas_commitment(nonce)
    assert res._keys is not None
    master, context = res._keys.master, res._context
    assert derive_sas(master, context, ch, sh, nonce) == sas
    others = {derive_sas(master, context, ch, sh, os.urandom(32)) for _ in range(TRIES)}
    assert len(others) == TRIES and sas not in others  # 44 bits: a clash is 2^-37 here
