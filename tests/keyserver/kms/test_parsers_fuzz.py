"""Fuzzing every parser of the node-to-node API and of the ETSI 014 / module northbound API
(hypothesis): for any JSON (and any bytes), a parser returns its value or raises its own typed
format error, which the handlers turn into a 4xx; never anything else (a 500), and valid
messages with one field replaced by anything are refused unless still valid."""

from __future__ import annotations

import contextlib
import json
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyserver.etsi014 import messages as etsi014
from keyserver.etsi014.messages import EtsiError, Limits
from keyserver.kms import relay
from keyserver.kms.linkmanager import sync_from
from keyserver.kms.relay import Ack, AckStatus, RelayFormatError, RelayHeader, Void
from keyserver.kms.routing import LinkReport, Lsa, LsaFormatError, lsa_from_json, lsa_to_json

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=20,
)


def _hop() -> dict[str, Any]:
    h = RelayHeader(
        uuid.uuid4(),
        (uuid.uuid4(), uuid.uuid4()),
        32,
        "a",
        "c",
        "alice",
        "bob",
        ("a", "b", "c"),
        2,
        0,
        1,
        "b-c",
        96,
        10**12,
        "https://127.0.0.1:1/x",
    )
    return relay.encode_hop(relay.seal(h, [b"\x01" * 32, b"\x02" * 32], b"\x03" * h.slice_length))


def _ack() -> dict[str, Any]:
    return relay.encode_ack(Ack(uuid.uuid4(), (uuid.uuid4(),), AckStatus.RELAYED, "ok"))


def _void() -> dict[str, Any]:
    return relay.encode_void(Void(uuid.uuid4(), (uuid.uuid4(),), 10**12))


def _lsa() -> dict[str, Any]:
    return lsa_to_json(
        Lsa("a", 5, (LinkReport("a-b", True, None, False, 0.01, 1e6, 4096, "running"),))
    )


def _sync() -> dict[str, Any]:
    return {
        "link": "a-b",
        "sender": "a",
        "announce_seq": 3,
        "streams": [
            {"owner": "a", "end": 4096, "layout": "00" * 32, "cursor": 128},
            {"owner": "b", "end": 2048, "layout": "11" * 32, "cursor": 0},
        ],
    }


def _sync_from(obj: Any) -> object:
    try:
        return sync_from(obj)
    except EtsiError as e:
        assert 400 <= e.status < 500
        raise RelayFormatError(str(e)) from None


PARSERS = {
    "ext_keys": (relay.decode_hop, _hop),
    "ack": (relay.decode_ack, _ack),
    "void": (relay.decode_void, _void),
    "lsa": (lsa_from_json, _lsa),
    "sync": (_sync_from, _sync),
}


def _paths(obj: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [at]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*at, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*at, i))
    return out


def _replace(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(obj, dict):
        return {**obj, head: _replace(obj[head], rest, value)}
    return [_replace(v, rest, value) if i == head else v for i, v in enumerate(obj)]


def test_the_valid_messages_parse() -> None:
    for parse, valid in PARSERS.values():
        parse(valid())


@pytest.mark.parametrize("name", sorted(PARSERS))
@FUZZ
@given(data=st.data())
def test_node_api_parsers_refuse_anything_else_with_their_error(name: str, data: Any) -> None:
    parse, valid = PARSERS[name]
    msg = valid()
    if data.draw(st.booleans()):
        obj: Any = data.draw(json_values)
    else:  # one field (or sub-object) of a valid message replaced by anything
        path = data.draw(st.sampled_from(_paths(msg)))
        obj = _replace(msg, path, data.draw(json_values))
    with contextlib.suppress(RelayFormatError, LsaFormatError):
        parse(obj)  # anything but its typed error (a 4xx) fails the test


@FUZZ
@given(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_etsi014_body_parsers_answer_4xx_or_parse(body: bytes) -> None:
    limits = Limits()
    for parse in (
        etsi014.parse_json_object,
        lambda b: etsi014.parse_key_request(b, limits),
        lambda b: etsi014.parse_key_ids(b, 128),
    ):
        try:
            parse(body)
        except EtsiError as e:
            assert 400 <= e.status < 500


@FUZZ
@given(
    st.dictionaries(st.text(max_size=12), st.lists(st.text(max_size=20), max_size=3), max_size=4)
)
def test_etsi014_query_parsers_answer_4xx_or_parse(query: dict[str, list[str]]) -> None:
    for parse in (
        lambda q: etsi014.parse_key_request_query(q, Limits()),
        etsi014.parse_key_ids_query,
    ):
        try:
            parse(query)
        except EtsiError as e:
            assert 400 <= e.status < 500


def test_absurd_sizes_are_refused() -> None:
    with pytest.raises(EtsiError):
        etsi014.parse_json_object(b"[" * 100_000 + b"]" * 100_000, 10**6)
    with pytest.raises(EtsiError):
        etsi014.parse_json_object(b'{"n": ' + b"9" * 5000 + b"}")
    with pytest.raises(EtsiError):
        etsi014.parse_json_object(b" " * (etsi014.MAX_BODY_BYTES + 1))
    big = _hop()
    big["keys"] = big["keys"] * 5000
    with pytest.raises(RelayFormatError):
        relay.decode_hop(big)
    with pytest.raises(EtsiError):
        sync_from({**_sync(), "announce_seq": 2**64})
    with pytest.raises(EtsiError):
        sync_from(_replace(_sync(), ("streams", 0, "layout"), "00" * 100_000))
