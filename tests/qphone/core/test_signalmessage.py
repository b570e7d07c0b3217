"""The signaling message codec (qphone.core.signalmessage): strict and bounded."""

from __future__ import annotations

import contextlib
import json
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qphone.core.signalmessage import (
    MAX_MESSAGE_BYTES,
    SignalingProtocolError,
    SignalKind,
    SignalMessage,
    decode_body,
    decode_length,
    encode_message,
)

sdp_text = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
    max_size=500,
).map(lambda s: "v=0\r\n" + s)


@given(sdp=sdp_text, kind=st.sampled_from([SignalKind.OFFER, SignalKind.ANSWER]))
def test_round_trip(sdp: str, kind: SignalKind) -> None:
    wire = encode_message(SignalMessage(kind, sdp=sdp))
    length = decode_length(wire[:4])
    assert length == len(wire) - 4
    assert decode_body(wire[4:]) == SignalMessage(kind, sdp=sdp)


@given(reason=st.text(max_size=500))
def test_reject_round_trip(reason: str) -> None:
    wire = encode_message(SignalMessage(SignalKind.REJECT, reason=reason))
    assert decode_body(wire[4:]).reason == reason


@given(body=st.binary(max_size=2000))
def test_arbitrary_bytes_only_raise_protocol_error(body: bytes) -> None:
    with contextlib.suppress(SignalingProtocolError):
        decode_body(body)


@given(
    obj=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda kids: (
            st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_arbitrary_json_only_raises_protocol_error(obj: object) -> None:
    with contextlib.suppress(SignalingProtocolError):
        decode_body(json.dumps(obj).encode())


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"\xff\xfe", "not UTF-8"),
        (b"not json", "not valid JSON"),
        (b"[1,2]", "not a JSON object"),
        (b'{"type":"offer","sdp":"v=0\\r\\n"}', "version"),
        (b'{"qphone":2,"type":"offer","sdp":"v=0\\r\\n"}', "version 2"),
        (b'{"qphone":true,"type":"offer","sdp":"v=0\\r\\n"}', "version"),
        (b'{"qphone":1,"type":"hello","sdp":"v=0\\r\\n"}', "unknown signaling message type"),
        (b'{"qphone":1,"type":"offer","sdp":"v=0\\r\\n","x":1}', "wrong fields"),
        (b'{"qphone":1,"type":"offer"}', "wrong fields"),
        (b'{"qphone":1,"type":"offer","sdp":5}', "must be a string"),
        (b'{"qphone":1,"type":"offer","sdp":"hello"}', "v=0"),
        (b'{"qphone":1,"type":"offer","sdp":"v=0\\r\\n","sdp":"v=0\\r\\n"}', "duplicate key"),
        (b'{"qphone":1,"type":"offer","sdp":NaN}', "non-standard"),
    ],
)
def test_malformed_bodies_rejected(body: bytes, match: str) -> None:
    with pytest.raises(SignalingProtocolError, match=match):
        decode_body(body)


def test_length_limits() -> None:
    with pytest.raises(SignalingProtocolError, match="exceeds the limit"):
        decode_length(struct.pack(">I", MAX_MESSAGE_BYTES + 1))
    with pytest.raises(SignalingProtocolError, match="empty"):
        decode_length(b"\0\0\0\0")
    with pytest.raises(SignalingProtocolError):
        decode_length(b"\0\0")
    assert decode_length(struct.pack(">I", MAX_MESSAGE_BYTES)) == MAX_MESSAGE_BYTES
    with pytest.raises(SignalingProtocolError):
        encode_message(SignalMessage(SignalKind.OFFER, sdp="v=0\r\n" + "a" * MAX_MESSAGE_BYTES))
