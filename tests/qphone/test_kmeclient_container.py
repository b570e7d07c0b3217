"""qphone's ETSI 014 key-container parser (qphone.kmeclient.parse_key_container) against the
container qkd-keyserver builds (keyserver.etsi014.messages.key_container): an interoperability
test between two independent implementations of the two ends of the wire (qphone never imports
keyserver; this test may)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyserver.etsi014.key import Key
from keyserver.etsi014.messages import key_container
from qphone.core.qkd import QkdKey
from qphone.kmeclient import KmeProtocolError, parse_key_container

KID = "3f1a2b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b"
KEY32 = base64.b64encode(bytes(range(32))).decode()


def _keys(size: int) -> st.SearchStrategy[list[Key]]:
    one = st.builds(Key.of, st.uuids(), st.binary(min_size=size, max_size=size))
    return st.lists(one, min_size=1, max_size=16, unique_by=lambda k: k.key_id)


@given(st.integers(1, 64).flatmap(lambda n: st.tuples(st.just(n), _keys(n))))
def test_what_keyserver_builds_qphone_parses(sized: tuple[int, list[Key]]) -> None:
    size, keys = sized
    obj = json.loads(json.dumps(key_container(keys)))
    got = parse_key_container(obj, key_bytes=size, max_keys=len(keys))
    assert got == [QkdKey(k.key_id, bytes(k.material)) for k in keys]


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda c: st.lists(c, max_size=3)
                    | st.dictionaries(st.text(max_size=8), c, max_size=3),
                    max_leaves=12))  # fmt: skip
def test_any_json_gives_keys_or_one_protocol_error(obj: Any) -> None:
    for doc in (obj, {"keys": obj}, {"keys": [obj]}, {"keys": [{"key_ID": KID, "key": obj}]}):
        try:
            keys = parse_key_container(doc, key_bytes=None, max_keys=4)
        except KmeProtocolError as e:
            assert str(e)
        else:
            assert 1 <= len(keys) <= 4


@pytest.mark.parametrize(
    ("doc", "why"),
    [
        ({}, "no 'keys' array"),
        ({"keys": []}, "holds 0 keys"),
        ({"keys": [{"key_ID": KID, "key": KEY32}] * 2}, "same key_ID twice"),
        ({"keys": [{"key_ID": KID, "key": KEY32}] * 3}, r"holds 3 keys, expected 1\.\.2"),
        ({"keys": [{"key_ID": KID, "key": KEY32}], "x": 1}, "unknown members"),
        ({"keys": [{"key_ID": KID, "key": KEY32, "x": 1}]}, "not an object of key_ID and key"),
        ({"keys": [{"key_ID": KID.replace("-", ""), "key": KEY32}]}, "not a UUID"),
        ({"keys": [{"key_ID": "urn:uuid:" + KID, "key": KEY32}]}, "not a UUID"),
        ({"keys": [{"key_ID": KID, "key": KEY32.rstrip("=")}]}, "not base64"),
        ({"keys": [{"key_ID": KID, "key": "!" + KEY32[1:]}]}, "not base64"),
        ({"keys": [{"key_ID": KID, "key": base64.b64encode(bytes(31)).decode()}]}, "31 bytes"),
        ({"keys": [{"key_ID": KID, "key": 7}]}, "lacks key_ID or key"),
    ],
)
def test_qphone_refuses_what_is_not_the_container_asked_for(doc: Any, why: str) -> None:
    with pytest.raises(KmeProtocolError, match=why):
        parse_key_container(doc, key_bytes=32, max_keys=2)


def test_the_extension_members_are_allowed() -> None:
    doc = {
        "keys": [{"key_ID": KID, "key_ID_extension": {}, "key": KEY32, "key_extension": {}}],
        "key_container_extension": {},
    }
    [key] = parse_key_container(doc, key_bytes=32, max_keys=1)
    assert str(key.key_id) == KID and key.material == bytes(range(32))
