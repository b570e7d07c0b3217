"""Hybrid handshake: success, and every attack the issue names fails closed."""

from __future__ import annotations

import copy
import dataclasses
import os
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from qphone.core.callparams import CallParams, Mode
from qphone.core.errors import HandshakeFailed, MalformedMessage, UnexpectedMessage
from qphone.core.events import HandshakeComplete, ResolveQkdKeys, SendControl
from qphone.core.handshake import (
    ClientFinish,
    ClientHello,
    HandshakeResult,
    Initiator,
    Responder,
    ResponderPolicy,
    ServerHello,
)
from qphone.core.identity import ED25519_SIG, Identity
from qphone.core.qkd import QkdKey

ALICE = Identity.generate()
BOB = Identity.generate()
MALLORY = Identity.generate()


def qkd(bits: int = 256) -> QkdKey:
    return QkdKey(uuid.uuid4(), os.urandom(bits // 8))


def run(
    params: CallParams | None = None,
    key: QkdKey | None = None,
    bob_key: QkdKey | None = None,
    cb_a: bytes = b"B" * 32,
    cb_b: bytes = b"B" * 32,
    policy: ResponderPolicy | None = None,
    ini_identity: Identity = ALICE,
    expected_by_initiator: Identity | None = None,
) -> tuple[HandshakeResult, HandshakeResult]:
    params = params or CallParams()
    key = key or qkd()
    ini = Initiator(
        ini_identity,
        params,
        [] if params.pqc_only else [key],
        cb_a,
        expected_by_initiator.public if expected_by_initiator else None,
    )
    res = Responder(BOB, cb_b, policy)
    ev = res.receive(ini.start())
    if isinstance(ev[0], ResolveQkdKeys):
        ev = res.provide_qkd_keys([bob_key or key])
    assert isinstance(ev[0], SendControl)
    out = ini.receive(ev[0].data)
    assert isinstance(out[1], HandshakeComplete)
    fin = res.receive(out[0].data)
    assert isinstance(fin[0], HandshakeComplete)
    return out[1].result, fin[0].result


def test_success_both_modes_agree() -> None:
    for mode in Mode:
        a, b = run(CallParams(mode=mode))
        assert a.sas == b.sas and len(a.sas.split()) == 4
        assert a.transcript_hash == b.transcript_hash
        assert a.secrets.chain0 == b.secrets.chain0
        assert a.secrets.control_i2r == b.secrets.control_i2r != a.secrets.control_r2i
        assert a.peer == BOB.public and b.peer == ALICE.public
        assert b.params.mode is mode


def test_fresh_keys_every_call() -> None:
    a1, _ = run()
    a2, _ = run()
    assert a1.secrets.chain0 != a2.secrets.chain0 and a1.sas != a2.sas


def test_mismatched_qkd_key_fails_closed() -> None:
    key = qkd()
    other = QkdKey(key.key_id, os.urandom(32))
    with pytest.raises(HandshakeFailed, match="key confirmation"):
        run(key=key, bob_key=other)


def test_mismatched_channel_binding_fails_closed() -> None:
    with pytest.raises(HandshakeFailed, match="channel-binding mismatch"):
        run(cb_a=b"A" * 32, cb_b=b"B" * 32)


def test_wrong_identity_key_fails_closed() -> None:
    # the initiator pins Bob, but Mallory answers
    with pytest.raises(HandshakeFailed, match="not the expected"):
        run(expected_by_initiator=MALLORY)
    # the responder pins Mallory, but Alice calls
    with pytest.raises(HandshakeFailed, match="not the expected"):
        run(policy=ResponderPolicy(expected_peer=MALLORY.public))


def test_identity_swapped_in_message_fails() -> None:
    """Mallory replaces Alice's public identity in the ClientHello: her Finish cannot verify."""
    key = qkd()
    ini = Initiator(ALICE, CallParams(), [key], b"B" * 32)
    ch = ini.start()
    pos = ch.index(ALICE.public.encode())
    forged = ch[:pos] + MALLORY.public.encode() + ch[pos + len(ALICE.public.encode()) :]
    res = Responder(BOB, b"B" * 32)
    res.receive(forged)
    sh = res.provide_qkd_keys([key])[0]
    assert isinstance(sh, SendControl)
    # Alice's view of the transcript differs: she rejects Bob's signature
    with pytest.raises(HandshakeFailed, match="signature failed"):
        ini.receive(sh.data)


@pytest.mark.parametrize("forced", [Mode.OTP, Mode.AES])
def test_mode_downgrade_detected(forced: Mode) -> None:
    honest = Mode.AES if forced is Mode.OTP else Mode.OTP
    key = qkd()
    ini = Initiator(ALICE, CallParams(mode=honest), [key], b"B" * 32)
    ch = bytearray(ini.start())
    assert ch[66] == honest  # type(1) version(1) random(32) commitment(32) then mode
    ch[66] = forced
    res = Responder(BOB, b"B" * 32)
    res.receive(bytes(ch))
    sh = res.provide_qkd_keys([key])[0]
    assert isinstance(sh, SendControl)
    with pytest.raises(HandshakeFailed):
        ini.receive(sh.data)


def test_responder_policy_refuses_mode_and_pqc_only() -> None:
    with pytest.raises(HandshakeFailed, match="not allowed"):
        run(CallParams(mode=Mode.OTP), policy=ResponderPolicy(required_mode=Mode.AES))
    with pytest.raises(HandshakeFailed, match="allow-pqc-only"):
        run(CallParams(pqc_only=True, handshake_qkd_bits=0))
    a, b = run(
        CallParams(pqc_only=True, handshake_qkd_bits=0),
        policy=ResponderPolicy(allow_pqc_only=True),
    )
    assert a.qkd_bits == 0 and a.sas == b.sas and a.params.pqc_only


def test_replayed_messages_fail_closed() -> None:
    key = qkd()
    ini = Initiator(ALICE, CallParams(), [key], b"B" * 32)
    ch = ini.start()
    res = Responder(BOB, b"B" * 32)
    res.receive(ch)
    sh = res.provide_qkd_keys([key])[0]
    assert isinstance(sh, SendControl)
    # ClientHello replayed to the same responder
    res2 = copy.deepcopy(res)
    with pytest.raises(HandshakeFailed):
        res2.receive(ch)
    assert res2.closed
    out = ini.receive(sh.data)
    # ServerHello replayed to the initiator after completion
    with pytest.raises(UnexpectedMessage):
        ini.receive(sh.data)
    # ServerHello of this call replayed to a new call's initiator
    ini2 = Initiator(ALICE, CallParams(), [key], b"B" * 32)
    ini2.start()
    with pytest.raises(HandshakeFailed):
        ini2.receive(sh.data)
    # Finish of this call replayed to a new responder that answered a new hello
    fin = out[0]
    assert isinstance(fin, SendControl)
    res3 = Responder(BOB, b"B" * 32)
    res3.receive(
        ini2.start() if False else Initiator(ALICE, CallParams(), [key], b"B" * 32).start()
    )
    res3.provide_qkd_keys([key])
    with pytest.raises(HandshakeFailed):
        res3.receive(fin.data)
    assert res3.closed


def _fields(msg: Any, prefix: str = "") -> dict[str, object]:
    """The leaf fields of a decoded message (nested dataclasses flattened, e.g. ``params.mode``;
    a hybrid signature split into its Ed25519 and ML-DSA-65 halves)."""
    out: dict[str, object] = {}
    for f in dataclasses.fields(msg):
        value = getattr(msg, f.name)
        name = prefix + f.name
        if dataclasses.is_dataclass(value):
            out.update(_fields(value, name + "."))
        elif f.name == "signature" and isinstance(value, bytes):
            out[name + ".ed25519"] = value[:ED25519_SIG]
            out[name + ".mldsa65"] = value[ED25519_SIG:]
        else:
            out[name] = value
    return out


def _flip(msg: bytes, i: int) -> bytes:
    return msg[:i] + bytes([msg[i] ^ (1 << (i % 8))]) + msg[i + 1 :]


def _byte_groups(msg: bytes, parse: Callable[[bytes], object]) -> dict[tuple[str, ...], list[int]]:
    """Flip one bit in every byte of ``msg`` and group the positions by what the receiver's
    parse makes of it: ``("refused",)`` when it raises, else the names of the fields whose value
    changed. Asserts that every byte the parse accepts changes some field: no byte is ignored."""
    before = _fields(parse(msg))
    groups: dict[tuple[str, ...], list[int]] = {}
    for i in range(len(msg)):
        try:
            after = _fields(parse(_flip(msg, i)))
        except (HandshakeFailed, MalformedMessage):
            key: tuple[str, ...] = ("refused",)
        else:
            key = tuple(sorted(n for n in before if after[n] != before[n]))
            assert key, f"byte {i} changed no field of the message: the parse ignores it"
        groups.setdefault(key, []).append(i)
    return groups


def _ends(groups: dict[tuple[str, ...], list[int]]) -> list[int]:
    """The first and the last byte of every group: one tamper per field at each end (hybrid
    parts and length-prefixed lists are laid end to end, so both ends reach both kinds)."""
    return sorted({p for positions in groups.values() for p in (positions[0], positions[-1])})


def test_every_byte_of_every_message_is_protected() -> None:
    """Every byte of each handshake message is protected: tampering with any one is refused.

    Flipping a bit in every byte and running a whole handshake each time costs an ML-DSA
    signature per ClientHello byte and a verification per ServerHello/ClientFinish byte (tens of
    seconds), so the check is split along the wire format, which is what the handshake's
    protection rests on: each side signs and MACs a transcript of the messages' raw bytes.

    1. Per byte (cheap: the receiver's parse): a flipped bit in any byte of a message is refused
       by the receiver's parse (for the ClientHello: by the responder, policy included) or changes
       the value of a field of the parsed message, never nothing; this also derives which bytes
       belong to which field.
    2. Per field (end to end): for the first and the last byte of every field and of the refused
       bytes, the tampered message is sent in a real handshake and the handshake never completes
       (ClientHello: the responder refuses it or the initiator refuses the ServerHello signed over
       a transcript that differs from its own; ServerHello and ClientFinish: their receiver
       refuses). A tampered QKD key ID is left to the KME, which finds no such key (see
       test_unresolvable_key_ids_abort).
    3. Truncated and extended messages are refused.
    """
    key = qkd()
    ini = Initiator(ALICE, CallParams(), [key], b"B" * 32)
    ch = ini.start()
    res = Responder(BOB, b"B" * 32)
    res.receive(ch)
    sh_ev = res.provide_qkd_keys([key])[0]
    assert isinstance(sh_ev, SendControl)
    sh = sh_ev.data
    res_waiting = copy.deepcopy(res)
    fin_ev = copy.deepcopy(ini).receive(sh)[0]
    assert isinstance(fin_ev, SendControl)
    fin = fin_ev.data

    def responder_parse(data: bytes) -> ClientHello:
        Responder(BOB, b"B" * 32).receive(data)  # refuses what the responder's policy refuses
        return ClientHello.decode(data)

    ch_groups = _byte_groups(ch, responder_parse)
    assert {"random", "sas_commitment", "x25519", "mlkem_ek", "qkd_key_ids"} <= {
        n for names in ch_groups for n in names
    }
    for i in _ends(ch_groups):
        r = Responder(BOB, b"B" * 32)
        try:
            ev = r.receive(_flip(ch, i))
            assert isinstance(ev[0], ResolveQkdKeys)
            if ev[0].key_ids != (key.key_id,):
                continue  # the KME finds no such key: the responder aborts (tested below)
            reply = r.provide_qkd_keys([key])[0]
            assert isinstance(reply, SendControl)
            copy.deepcopy(ini).receive(reply.data)
        except HandshakeFailed:
            continue
        raise AssertionError(f"ClientHello byte {i} tampered but the handshake completed")

    sh_groups = _byte_groups(sh, ServerHello.decode)
    assert {"signature.ed25519", "signature.mldsa65", "confirm", "mlkem_ct"} <= {
        n for names in sh_groups for n in names
    }
    for i in _ends(sh_groups):
        with pytest.raises(HandshakeFailed):
            copy.deepcopy(ini).receive(_flip(sh, i))

    fin_groups = _byte_groups(fin, ClientFinish.decode)
    assert {"refused", "sas_nonce", "signature.ed25519", "signature.mldsa65", "confirm"} <= {
        n for names in fin_groups for n in names
    }
    for i in _ends(fin_groups):
        with pytest.raises(HandshakeFailed):
            copy.deepcopy(res_waiting).receive(_flip(fin, i))

    # truncated and extended messages
    for bad in (sh[:-1], sh + b"\x00"):
        with pytest.raises(HandshakeFailed):
            copy.deepcopy(ini).receive(bad)
    with pytest.raises(HandshakeFailed):
        Responder(BOB, b"B" * 32).receive(ch[:100])


def test_unresolvable_key_ids_abort() -> None:
    key = qkd()
    res = Responder(BOB, b"B" * 32)
    res.receive(Initiator(ALICE, CallParams(), [key], b"B" * 32).start())
    with pytest.raises(HandshakeFailed, match="KME"):
        res.fail("KME could not resolve the QKD key IDs")
    assert res.closed
    res2 = Responder(BOB, b"B" * 32)
    res2.receive(Initiator(ALICE, CallParams(), [key], b"B" * 32).start())
    with pytest.raises(HandshakeFailed, match="do not match"):
        res2.provide_qkd_keys([qkd()])


def test_params_validation() -> None:
    with pytest.raises(ValueError, match="otp_tag_bits"):
        CallParams(otp_tag_bits=48)
    with pytest.raises(ValueError, match="PQC-only"):
        CallParams(mode=Mode.OTP, pqc_only=True, handshake_qkd_bits=0)
    p = CallParams(mode=Mode.OTP, otp_tag_bits=128, rotate_frames=7)
    assert replace(p, rotate_frames=8) != p


def test_ephemeral_secrets_dropped_when_done_or_failed() -> None:
    key = qkd()
    ini = Initiator(ALICE, CallParams(), [key], b"B" * 32)
    res = Responder(BOB, b"B" * 32)
    res.receive(ini.start())
    sh = res.provide_qkd_keys([key])[0]
    assert isinstance(sh, SendControl)
    failed = copy.deepcopy(ini)
    with pytest.raises(HandshakeFailed):
        failed.receive(sh.data[:-1] + bytes([sh.data[-1] ^ 1]))
    fin = ini.receive(sh.data)[0]
    assert isinstance(fin, SendControl)
    res.receive(fin.data)
    for side in (ini, failed):
        assert side._x is None and side._kem is None and side._qkd == b""
    assert res._keys is None


def test_hang_up_erases_every_session_secret_of_the_handshake_result() -> None:
    """Chain 0 and both control MAC keys are zero in the handshake result once the session
    closes (bye or close), in both modes; a result no session was made of erases itself."""
    from qphone.core.session import new_session

    for mode in Mode:
        a, b = run(CallParams(mode=mode))
        assert not a.secrets.erased and any(a.secrets.control_i2r)
        sa, sb = new_session(a), new_session(b)
        sb.close()
        assert b.secrets.erased
        assert not a.secrets.erased  # each side's buffers are its own
        sa.bye("hangup")
        assert a.secrets.erased
        assert a.secrets.control_i2r == bytearray(32) and a.secrets.control_r2i == bytearray(32)
    c, _ = run()
    c.secrets.erase()
    assert c.secrets.erased
