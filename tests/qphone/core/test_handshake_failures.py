"""Every failure inside the handshake is a HandshakeFailed that closes it (no raw exception)."""

from __future__ import annotations

import copy
import os
import uuid
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric import mlkem
from hypothesis import given, settings
from hypothesis import strategies as st

from qphone.core.callparams import CallParams
from qphone.core.errors import HandshakeFailed
from qphone.core.events import SendControl
from qphone.core.handshake import (
    ClientHello,
    HandshakeState,
    Initiator,
    Responder,
    ResponderPolicy,
    ServerHello,
)
from qphone.core.identity import Identity
from qphone.core.qkd import QkdKey

ALICE, BOB = Identity.generate(), Identity.generate()
BINDING = b"B" * 32
# X25519 public keys of small order: the shared secret would be all zero
LOW_ORDER = [
    bytes(32),
    (1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
]


def qkd() -> QkdKey:
    return QkdKey(uuid.uuid4(), os.urandom(32))


def with_x25519(hello: bytes, public: bytes) -> bytes:
    ch = ClientHello.decode(hello)
    return replace(ch, x25519=public).encode()


@pytest.mark.parametrize("public", LOW_ORDER)
def test_a_low_order_x25519_key_in_the_client_hello_is_a_clean_failure(public: bytes) -> None:
    """QKD path: the key is resolved first, then the exchange fails (used to be a ValueError)."""
    key = qkd()
    hello = with_x25519(Initiator(ALICE, CallParams(), [key], BINDING).start(), public)
    res = Responder(BOB, BINDING)
    res.receive(hello)
    assert res.state is HandshakeState.WAIT_QKD
    with pytest.raises(HandshakeFailed, match="invalid X25519 public key"):
        res.provide_qkd_keys([key])
    assert res.state is HandshakeState.FAILED and res._keys is None


@pytest.mark.parametrize("public", LOW_ORDER)
def test_a_low_order_x25519_key_on_the_pqc_path_and_in_the_server_hello(public: bytes) -> None:
    params = CallParams(pqc_only=True, handshake_qkd_bits=0)
    res = Responder(BOB, BINDING, ResponderPolicy(allow_pqc_only=True))
    hello = with_x25519(Initiator(ALICE, params, [], BINDING).start(), public)
    with pytest.raises(HandshakeFailed, match="invalid X25519 public key"):
        res.receive(hello)
    assert res.closed
    key = qkd()
    ini = Initiator(ALICE, CallParams(), [key], BINDING)
    res = Responder(BOB, BINDING)
    res.receive(ini.start())
    reply = res.provide_qkd_keys([key])[0]
    assert isinstance(reply, SendControl)
    sh = ServerHello.decode(reply.data)
    forged = replace(sh, x25519=public).encode()
    with pytest.raises(HandshakeFailed, match="invalid X25519 public key"):
        ini.receive(forged)
    assert ini.state is HandshakeState.FAILED and ini._x is None


def test_any_exception_of_the_crypto_library_is_a_handshake_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = qkd()
    ini = Initiator(ALICE, CallParams(), [key], BINDING)
    res = Responder(BOB, BINDING)
    res.receive(ini.start())

    def broken(*args: object) -> object:
        raise RuntimeError("OpenSSL internal error")

    waiting = copy.deepcopy(res)
    monkeypatch.setattr(mlkem.MLKEM768PublicKey, "from_public_bytes", broken)
    with pytest.raises(HandshakeFailed, match="RuntimeError: OpenSSL internal error"):
        waiting.provide_qkd_keys([key])
    assert waiting.closed
    monkeypatch.undo()
    reply = res.provide_qkd_keys([key])[0]
    assert isinstance(reply, SendControl)
    monkeypatch.setattr(ALICE, "sign", broken)
    with pytest.raises(HandshakeFailed, match="RuntimeError"):
        ini.receive(reply.data)
    assert ini.closed


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=7000), prefix=st.sampled_from([b"", b"\x01\x01", b"\x02\x01"]))
def test_no_input_raises_anything_but_handshake_failed(data: bytes, prefix: bytes) -> None:
    res = Responder(BOB, BINDING)
    with pytest.raises(HandshakeFailed):
        res.receive(prefix + data)
    assert res.closed
    ini = Initiator(ALICE, CallParams(), [qkd()], BINDING)
    ini.start()
    with pytest.raises(HandshakeFailed):
        ini.receive(prefix + data)
    assert ini.closed
