"""The ETSI 014 key container: keyserver's one builder and one parser, and the Key they carry.

Build -> parse gives the keys back (property test); the parser refuses every container that is
not the one asked for with one KeyContainerError and nothing else (strict, bounded).
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyserver.etsi014.key import Key
from keyserver.etsi014.messages import (
    KeyContainerError,
    key_container,
    key_container_json,
    parse_key_container,
)

KID = "3f1a2b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b"
KEY32 = base64.b64encode(bytes(range(32))).decode()


def _keys(size: int) -> st.SearchStrategy[list[Key]]:
    one = st.builds(Key.of, st.uuids(), st.binary(min_size=size, max_size=size))
    return st.lists(one, min_size=1, max_size=16, unique_by=lambda k: k.key_id)


@given(st.integers(1, 64).flatmap(lambda n: st.tuples(st.just(n), _keys(n))))
def test_build_then_parse_gives_the_keys_back(sized: tuple[int, list[Key]]) -> None:
    size, keys = sized
    body = json.dumps(key_container(keys)).encode()
    got = parse_key_container(body, key_bytes=size, max_keys=len(keys))
    assert got == keys
    assert [bytes(k.material) for k in got] == [bytes(k.material) for k in keys]
    assert parse_key_container(body, key_bytes=None, max_keys=16) == keys


@given(st.integers(1, 64).flatmap(_keys))
def test_the_reply_is_the_json_of_the_container(keys: list[Key]) -> None:
    """What a KME sends (key_container_json) is byte for byte json.dumps of key_container."""
    assert key_container_json(keys) == json.dumps(key_container(keys)).encode()


@given(st.binary(max_size=400))
def test_the_parser_never_crashes_on_bytes(body: bytes) -> None:
    try:
        keys = parse_key_container(body, key_bytes=None, max_keys=4)
    except KeyContainerError as e:
        assert str(e) and "\n" not in str(e)
    else:
        assert 1 <= len(keys) <= 4 and all(k.material for k in keys)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
    max_leaves=12,
)


@given(JSON)
def test_the_parser_never_crashes_on_json(obj: Any) -> None:
    for doc in (obj, {"keys": obj}, {"keys": [obj]}, {"keys": [{"key_ID": KID, "key": obj}]}):
        try:
            parse_key_container(json.dumps(doc).encode(), key_bytes=None, max_keys=4)
        except KeyContainerError as e:
            assert str(e)


@pytest.mark.parametrize(
    ("doc", "why"),
    [
        ({}, "no 'keys' array"),
        ({"keys": []}, "holds 0 keys"),
        ({"keys": [{"key_ID": KID, "key": KEY32}], "extra": 1}, "unknown members"),
        ({"keys": [{"key_ID": KID, "key": KEY32, "x": 1}]}, "not an object of key_ID and key"),
        ({"keys": [{"key_ID": KID.replace("-", ""), "key": KEY32}]}, "no key_ID UUID"),
        ({"keys": [{"key_ID": "{" + KID + "}", "key": KEY32}]}, "no key_ID UUID"),
        ({"keys": [{"key_ID": KID, "key": KEY32.rstrip("=")}]}, "not padded standard base64"),
        ({"keys": [{"key_ID": KID, "key": KEY32[:-4] + "AA\n=="}]}, "base64"),
        ({"keys": [{"key_ID": KID, "key": ""}]}, "base64|0 bytes"),
        ({"keys": [{"key_ID": KID, "key": base64.b64encode(bytes(31)).decode()}]}, "31 bytes"),
        ({"keys": [{"key_ID": KID, "key": 5}]}, "base64"),
        ([{"key_ID": KID, "key": KEY32}], "no 'keys' array"),
    ],
)
def test_the_parser_refuses_what_is_not_the_container_asked_for(doc: Any, why: str) -> None:
    with pytest.raises(KeyContainerError, match=why):
        parse_key_container(json.dumps(doc).encode(), key_bytes=32, max_keys=2)


def test_the_parser_refuses_a_key_id_twice_and_more_keys_than_asked() -> None:
    body = json.dumps({"keys": [{"key_ID": KID, "key": KEY32}] * 2}).encode()
    with pytest.raises(KeyContainerError, match="key_ID twice"):
        parse_key_container(body, key_bytes=32, max_keys=2)
    with pytest.raises(KeyContainerError, match=r"holds 2 keys, expected 1\.\.1"):
        parse_key_container(body, key_bytes=32, max_keys=1)


def test_the_parser_is_bounded() -> None:
    body = json.dumps({"keys": [{"key_ID": KID, "key": KEY32}]}).encode()
    assert len(parse_key_container(body, key_bytes=32, max_keys=1)) == 1
    with pytest.raises(KeyContainerError, match="larger than"):
        parse_key_container(body, key_bytes=32, max_keys=1, limit=len(body) - 1)
    dup = b'{"keys": [], "keys": [{"key_ID": "' + KID.encode() + b'", "key": "' + KEY32.encode()
    with pytest.raises(KeyContainerError, match=r"member twice"):
        parse_key_container(dup + b'"}]}', key_bytes=32, max_keys=1)
    with pytest.raises(KeyContainerError, match="not UTF-8 JSON"):
        parse_key_container(b"[" * 100_000, key_bytes=32, max_keys=1)


def test_a_key_is_frozen_erasable_and_never_printed() -> None:
    kid = uuid.uuid4()
    raw = bytes(range(1, 33))
    k = Key.of(kid, raw)
    assert k == Key.of(kid, raw) and k != Key.of(kid, bytes(32)) and hash(k) == hash(kid)
    assert k.bits == 256 and raw.hex() not in repr(k) and str(kid) in repr(k)
    with pytest.raises(AttributeError):
        k.material = bytearray(32)  # type: ignore[misc]
    k.erase()
    assert k.erased and k.material == bytearray(32) and raw == bytes(range(1, 33))
    with pytest.raises(TypeError, match=r"Key\.of"):
        Key(kid, raw)  # type: ignore[arg-type]
