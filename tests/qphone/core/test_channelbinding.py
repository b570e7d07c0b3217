"""Tests of DTLS fingerprint parsing and the channel binding (sans-I/O)."""

from __future__ import annotations

import contextlib
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qphone.core.channelbinding import (
    BINDING_LABEL,
    CallRole,
    Fingerprint,
    FingerprintError,
    binding_for_role,
    channel_binding,
    sha256_fingerprint,
)

digests = st.binary(min_size=32, max_size=32)


def fp(digest: bytes) -> Fingerprint:
    return Fingerprint("sha-256", digest)


@given(digest=digests)
def test_sdp_spelling_round_trip(digest: bytes) -> None:
    f = fp(digest)
    assert Fingerprint.parse("SHA-256", f.value) == f
    assert Fingerprint.parse("sha-256", f.value.lower()) == f


@given(caller=digests, answerer=digests)
def test_both_roles_compute_the_same_binding(caller: bytes, answerer: bytes) -> None:
    c, a = fp(caller), fp(answerer)
    expected = hashlib.sha256(BINDING_LABEL + caller + answerer).digest()
    assert binding_for_role(CallRole.CALLER, c, a) == expected
    assert binding_for_role(CallRole.ANSWERER, a, c) == expected


@given(caller=digests, answerer=digests, mitm=digests)
def test_swapped_fingerprint_changes_binding(caller: bytes, answerer: bytes, mitm: bytes) -> None:
    if mitm in (caller, answerer):
        return
    c, a, m = fp(caller), fp(answerer), fp(mitm)
    # The caller sees the relay's print instead of the answerer's, and vice versa.
    assert binding_for_role(CallRole.CALLER, c, m) != binding_for_role(CallRole.ANSWERER, a, c)
    assert binding_for_role(CallRole.CALLER, c, a) != binding_for_role(CallRole.ANSWERER, a, m)


def test_binding_is_ordered() -> None:
    x, y = fp(b"\x01" * 32), fp(b"\x02" * 32)
    assert channel_binding(x, y) != channel_binding(y, x)


@given(text=st.text(max_size=300))
def test_parse_never_raises_anything_but_fingerprint_error(text: str) -> None:
    with contextlib.suppress(FingerprintError):
        Fingerprint.parse("sha-256", text)


@pytest.mark.parametrize(
    ("algorithm", "value"),
    [
        ("sha-256", "AB:CD"),  # too short for sha-256
        ("sha-256", "AB:CD:" * 32 + "EF"),  # too long
        ("sha-256", "ABCD" * 16),  # no colons
        ("sha-256", ":".join(["ZZ"] * 32)),  # not hex
        ("sha 256", ":".join(["AB"] * 32)),  # bad algorithm
        ("sha-256", ""),
    ],
)
def test_malformed_fingerprints_rejected(algorithm: str, value: str) -> None:
    with pytest.raises(FingerprintError):
        Fingerprint.parse(algorithm, value)


def test_sha256_fingerprint_selection() -> None:
    a = fp(b"\x01" * 32)
    other = Fingerprint("sha-384", b"\x02" * 48)
    assert sha256_fingerprint([other, a]) == a
    with pytest.raises(FingerprintError, match="no sha-256"):
        sha256_fingerprint([other])
    with pytest.raises(FingerprintError, match="conflicting"):
        sha256_fingerprint([a, fp(b"\x03" * 32)])
    with pytest.raises(FingerprintError):
        channel_binding(other, a)
