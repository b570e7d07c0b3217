"""DTLS fingerprints, their SDP consistency, and the channel binding (sans-I/O)."""

from __future__ import annotations

import contextlib
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qphone.core.channelbinding import (
    BINDING_LABEL,
    DIGEST_BYTES,
    CallRole,
    DtlsSession,
    Fingerprint,
    FingerprintError,
    binding_for_role,
    channel_binding,
    check_certificate,
    common_fingerprints,
)

ALGORITHMS = sorted(DIGEST_BYTES)
certificates = st.binary(min_size=1, max_size=600)
exporters = st.binary(min_size=32, max_size=32)


def session(local: bytes, peer: bytes, exporter: bytes) -> DtlsSession:
    return DtlsSession(local, peer, exporter)


def prints(cert: bytes) -> list[Fingerprint]:
    return [Fingerprint.of(a, cert) for a in ALGORITHMS]


@given(algorithm=st.sampled_from(ALGORITHMS), cert=certificates)
def test_sdp_spelling_round_trip(algorithm: str, cert: bytes) -> None:
    f = Fingerprint.of(algorithm, cert)
    assert len(f.digest) == DIGEST_BYTES[algorithm]
    assert f.digest == hashlib.new(algorithm.replace("-", ""), cert).digest()
    assert Fingerprint.parse(algorithm.upper(), f.value) == f
    assert Fingerprint.parse(algorithm, f.value.lower()) == f


@given(caller=certificates, answerer=certificates, exporter=exporters)
def test_both_roles_compute_the_same_binding(
    caller: bytes, answerer: bytes, exporter: bytes
) -> None:
    expected = hashlib.sha256(
        BINDING_LABEL
        + len(caller).to_bytes(4, "big")
        + caller
        + len(answerer).to_bytes(4, "big")
        + answerer
        + bytes((32,))
        + exporter
    ).digest()
    assert binding_for_role(CallRole.CALLER, session(caller, answerer, exporter)) == expected
    assert binding_for_role(CallRole.ANSWERER, session(answerer, caller, exporter)) == expected


@given(
    caller=certificates,
    answerer=certificates,
    relay=certificates,
    leg1=exporters,
    leg2=exporters,
)
def test_a_relay_terminating_dtls_gets_two_bindings(
    caller: bytes, answerer: bytes, relay: bytes, leg1: bytes, leg2: bytes
) -> None:
    """Two DTLS sessions (relay's certificate on each leg, two exporters): two bindings, even
    if the relay reuses one certificate, or were the exporters equal (certificates differ)."""
    at_caller = binding_for_role(CallRole.CALLER, session(caller, relay, leg1))
    at_answerer = binding_for_role(CallRole.ANSWERER, session(answerer, relay, leg2))
    if (caller, leg1) != (relay, leg2) or relay != answerer:
        assert at_caller != at_answerer


def test_binding_is_ordered_and_length_prefixed() -> None:
    x = bytes(32)
    assert channel_binding(b"ab", b"c", x) != channel_binding(b"c", b"ab", x)
    assert channel_binding(b"ab", b"c", x) != channel_binding(b"a", b"bc", x)


def test_dtls_session_is_bounded() -> None:
    with pytest.raises(FingerprintError):
        DtlsSession(b"", b"x", bytes(32))
    with pytest.raises(FingerprintError):
        DtlsSession(b"x", b"x" * 20_000, bytes(32))
    with pytest.raises(FingerprintError):
        DtlsSession(b"x", b"x", bytes(31))


@given(algorithm=st.text(max_size=20), text=st.text(max_size=300))
def test_parse_never_raises_anything_but_fingerprint_error(algorithm: str, text: str) -> None:
    with contextlib.suppress(FingerprintError):
        f = Fingerprint.parse(algorithm, text)
        assert len(f.digest) == DIGEST_BYTES[f.algorithm]


@pytest.mark.parametrize(
    ("algorithm", "value"),
    [
        ("sha-256", "AB:CD"),  # too short for sha-256
        ("sha-256", "AB:CD:" * 32 + "EF"),  # too long
        ("sha-384", ":".join(["AB"] * 32)),  # a sha-256 length under another name
        ("sha-256", "ABCD" * 16),  # no colons
        ("sha-256", ":".join(["ZZ"] * 32)),  # not hex
        ("sha 256", ":".join(["AB"] * 32)),  # bad algorithm
        ("sha-1", ":".join(["AB"] * 20)),  # an algorithm aiortc does not verify
        ("md5", ":".join(["AB"] * 16)),
        ("sha-256", ""),
    ],
)
def test_malformed_fingerprints_rejected(algorithm: str, value: str) -> None:
    with pytest.raises(FingerprintError):
        Fingerprint.parse(algorithm, value)


def test_every_section_must_carry_the_same_prints() -> None:
    mine, relay = prints(b"mine"), prints(b"relay")
    assert common_fingerprints([mine, list(reversed(mine))]) == tuple(mine)
    assert common_fingerprints([mine[1:2], mine[1:2]]) == (mine[1],)
    refusals = [
        ([relay[1:2], mine[0:1]], "differ"),  # the attack: sha-384 here, sha-256 there
        ([mine, mine[:2]], "differ"),  # one section lacks an algorithm
        ([mine, [*mine[:2], relay[2]]], "differ"),  # same algorithms, one value differs
        ([mine, []], "no DTLS fingerprint"),
        ([[mine[0], relay[0]]], "more than one sha-256"),
        ([], "no m-section"),
    ]
    for sections, match in refusals:
        with pytest.raises(FingerprintError, match=match):
            common_fingerprints(sections)


@given(
    sections=st.lists(
        st.lists(
            st.builds(
                Fingerprint.of,
                st.sampled_from(ALGORITHMS),
                st.sampled_from([b"a", b"b"]),
            ),
            max_size=4,
        ),
        max_size=4,
    )
)
def test_common_prints_are_in_every_section_or_refused(sections: list[list[Fingerprint]]) -> None:
    try:
        common = common_fingerprints(sections)
    except FingerprintError:
        return
    assert common
    for section in sections:
        assert sorted(section, key=lambda f: f.algorithm) == list(common)


def test_the_certificate_must_match_every_print() -> None:
    cert = b"the peer's certificate"
    check_certificate(cert, prints(cert))
    check_certificate(cert, prints(cert)[2:])
    for bad in ([*prints(cert)[:2], prints(b"other")[2]], prints(b"other")[:1], []):
        with pytest.raises(FingerprintError):
            check_certificate(cert, bad)
