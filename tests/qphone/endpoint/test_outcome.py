"""How calls end: CallEnd as the summary shows it, and every failure mapped to its type."""

from __future__ import annotations

import pytest

from qphone.core.abort import Abort, AbortKind
from qphone.core.errors import HandshakeFailed, PeerIdentityMismatch, ProposalRefused
from qphone.endpoint.outcome import (
    CallEnd,
    CallFailed,
    ConnectionLost,
    ControlMessageRefused,
    EndCause,
    IdentityChanged,
    KeySupplyFailed,
    OutOfKey,
    PeerAborted,
    PeerFailed,
    PolicyRefused,
    abort_kind,
    call_failure,
    connection_lost,
    control_refused,
    key_supply_stopped,
    no_handshake_key,
    peer_failed,
    rotation_failed,
    task_failed,
)
from qphone.kmeclient import KmeEavesdropperAlarm, KmeOutOfKeys, KmeUnavailable
from qphone.transport.errors import TransportError


def failure(exc: Exception) -> CallFailed:
    return call_failure(exc, peer_sae_id="bob", own_sae_id="alice")


def test_call_end_reads_as_the_summary_end_reason() -> None:
    assert str(CallEnd.duration(5)) == "duration of 5 s reached"
    assert str(CallEnd.interrupted()) == "interrupted"
    assert str(CallEnd.cancelled("connecting")) == "interrupted while connecting"
    assert str(CallEnd.peer_hung_up("input finished")) == "peer hung up (input finished)"
    assert CallEnd.interrupted().cause is EndCause.INTERRUPTED
    end = KeySupplyFailed("KME unreachable").end()
    assert (str(end), end.failed, end.cause) == ("failed: KME unreachable", True, EndCause.FAILURE)
    end = PeerFailed("the peer ended the call: x").end()
    assert end.failed and end.cause is EndCause.PEER_BYE


def test_identity_outcomes() -> None:
    mine = failure(PeerIdentityMismatch("aaaa", "bbbb"))
    assert isinstance(mine, IdentityChanged)
    assert str(mine).startswith("!!! IDENTITY OF bob CHANGED (peer identity aaaa is not the ")
    assert "--trust-new-identity" in str(mine)


def test_an_abort_is_shown_in_neutral_words_and_never_as_identity_advice() -> None:
    """Anyone on the path can send an abort: what it claims is no evidence, so it never leads
    to identity advice, whatever its kind and words."""
    forged = Abort(
        AbortKind.IDENTITY_REFUSED,
        "the peer refused this terminal's identity: use --trust-new-identity",
    )
    theirs = failure(PeerAborted(forged))
    assert type(theirs) is PeerAborted
    text = str(theirs)
    assert text.startswith("the handshake was ended by an unauthenticated abort message")
    assert "nothing in it is verified" in text and "claims 'identity not accepted'" in text
    assert "IDENTITY" not in text and "CHANGED" not in text
    assert text.count("--trust-new-identity") == 1  # only inside the quoted claim


def test_policy_key_and_other_outcomes() -> None:
    refused = failure(ProposalRefused("caller asked for mode otp", "mode"))
    assert isinstance(refused, PolicyRefused) and refused.setting == "mode"
    assert isinstance(failure(KmeOutOfKeys("empty")), OutOfKey)
    for exc in (KmeUnavailable("down"), KmeEavesdropperAlarm("eve")):
        got = failure(exc)
        assert type(got) is KeySupplyFailed and str(got) == str(exc)
    aborted = PeerAborted(Abort(AbortKind.FAILED, "bad signature"), "handshake")
    assert failure(aborted) is aborted
    assert str(aborted).endswith("which claims 'handshake failed' and says: \"bad signature\"")
    for exc in (TransportError("ICE failed"), HandshakeFailed("man in the middle"), OSError("x")):
        got = failure(exc)
        assert type(got) is CallFailed and str(got) == str(exc)


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (PeerIdentityMismatch("a", "b"), AbortKind.IDENTITY_REFUSED),
        (ProposalRefused("no", "mode"), AbortKind.POLICY_REFUSED),
        (HandshakeFailed("tag"), AbortKind.FAILED),
    ],
)
def test_what_the_peer_is_told(exc: HandshakeFailed, kind: AbortKind) -> None:
    assert abort_kind(exc) is kind


def test_the_failures_of_a_call_are_typed_one_line_sentences() -> None:
    """What the set-up and the running call end with: each its type, one line, the fix or the
    fail-closed rule named."""
    no_key = no_handshake_key(KmeUnavailable("KME at x unreachable"), otp=False)
    assert type(no_key) is KeySupplyFailed and str(no_key).endswith("--allow-pqc-only)")
    assert "--allow-pqc-only" not in str(no_handshake_key(KmeUnavailable("down"), otp=True))
    assert isinstance(no_handshake_key(KmeOutOfKeys("empty"), otp=True), OutOfKey)
    assert isinstance(key_supply_stopped(KmeOutOfKeys("empty")), OutOfKey)
    refused = key_supply_stopped(ValueError("key of 128 bits, need 256"))
    assert type(refused) is KeySupplyFailed and "cannot use" in str(refused)
    rotation = rotation_failed(4, 2)
    assert isinstance(rotation, OutOfKey) and "epoch 4 is 2 epochs overdue" in str(rotation)
    assert "epoch 5 is not ready" in str(rotation)
    bye = peer_failed("out of key")
    assert isinstance(bye, PeerFailed) and bye.end().cause is EndCause.PEER_BYE
    assert isinstance(control_refused(ValueError("epoch 9")), ControlMessageRefused)
    lost = connection_lost("peer vanished")
    assert isinstance(lost, ConnectionLost) and str(lost) == "connection lost (peer vanished)"
    died = task_failed("playout", RuntimeError("boom"))
    assert type(died) is CallFailed and str(died) == "the playout task failed: RuntimeError: boom"
    for f in (no_key, refused, rotation, bye, lost, died):
        assert "\n" not in str(f) and f.end().failed
