"""ETSI 014 request parsers: strict, bounded, every failure a 400 EtsiError (property tests)."""

from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyserver.etsi014 import messages as etsi014
from keyserver.etsi014.messages import EtsiError, KeyRequest, Limits

LIM = Limits()


@given(st.binary(max_size=300))
def test_key_request_parser_never_crashes(body: bytes) -> None:
    try:
        req = etsi014.parse_key_request(body, LIM)
    except EtsiError as e:
        assert e.status == 400 and e.message
    else:
        assert 1 <= req.number <= LIM.max_key_per_request and req.size % 8 == 0


@given(st.binary(max_size=300))
def test_key_ids_parser_never_crashes(body: bytes) -> None:
    try:
        ids = etsi014.parse_key_ids(body, 128)
    except EtsiError as e:
        assert e.status == 400
    else:
        assert 1 <= len(ids) == len(set(ids))


@given(
    number=st.integers(1, LIM.max_key_per_request),
    size=st.integers(LIM.min_key_size // 8, LIM.max_key_size // 8).map(lambda n: 8 * n),
)
def test_valid_key_requests_round_trip(number: int, size: int) -> None:
    body = json.dumps({"number": number, "size": size}).encode()
    assert etsi014.parse_key_request(body, LIM) == KeyRequest(number, size)
    q = {"number": [str(number)], "size": [str(size)]}
    assert etsi014.parse_key_request_query(q, LIM) == KeyRequest(number, size)


@given(st.lists(st.uuids(), min_size=1, max_size=128, unique=True))
def test_key_ids_round_trip(ids: list[uuid.UUID]) -> None:
    body = json.dumps({"key_IDs": [{"key_ID": str(i)} for i in ids]}).encode()
    assert etsi014.parse_key_ids(body, 128) == ids


@given(st.integers().filter(lambda n: n < 1 or n > LIM.max_key_per_request))
def test_out_of_range_number_is_refused(number: int) -> None:
    with pytest.raises(EtsiError) as e:
        etsi014.parse_key_request(json.dumps({"number": number}).encode(), LIM)
    assert e.value.status == 400


def test_empty_body_means_defaults() -> None:
    assert etsi014.parse_key_request(b"", LIM) == KeyRequest(1, LIM.key_size)
    assert etsi014.parse_key_request(b"  \n", LIM) == KeyRequest(1, LIM.key_size)


def test_limits_validate_themselves() -> None:
    with pytest.raises(ValueError):
        Limits(key_size=100)
    with pytest.raises(ValueError):
        Limits(min_key_size=512, key_size=256)
    with pytest.raises(ValueError):
        Limits(max_key_per_request=0)
