"""One-hop direct key IDs (keyserver/kms/directkey.py): encoding, strict decoding, the tag."""

from __future__ import annotations

import os
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyserver.kms import directkey
from keyserver.kms.directkey import Binding, DirectKeyError, DirectRef

B = Binding("a", "a-b", "alice", "bob")
ids = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)
bindings = st.builds(Binding, ids, ids, ids, ids)
starts = st.integers(0, directkey.MAX_START)
sizes = st.integers(1, directkey.MAX_SIZE_BYTES)
tags = st.integers(0, directkey.PRIME - 1)


@given(starts, sizes, tags)
def test_id_round_trip(start: int, size: int, tag: int) -> None:
    ref = DirectRef(start, size, tag)
    kid = directkey.encode_id(ref)
    assert kid.version == directkey.VERSION and kid.variant == uuid.RFC_4122
    assert directkey.is_direct(kid)
    assert directkey.decode_id(kid) == ref
    assert directkey.decode_id(uuid.UUID(str(kid))) == ref  # through its text form


@given(st.integers(0, (1 << 128) - 1))
def test_decoding_any_uuid_is_total_and_strict(n: int) -> None:
    """Any 128 bits: None unless version 8, RFC variant and a tag inside the field; what decodes
    encodes back to the same ID."""
    kid = uuid.UUID(int=n)
    ref = directkey.decode_id(kid)
    if kid.version != 8 or kid.variant != uuid.RFC_4122:
        assert ref is None
    if ref is not None:
        assert directkey.encode_id(ref) == kid


def test_random_and_relay_ids_are_not_direct() -> None:
    for _ in range(100):
        kid = uuid.uuid4()
        assert not directkey.is_direct(kid) and directkey.decode_id(kid) is None


def test_a_tag_outside_the_field_is_refused() -> None:
    kid = directkey.encode_id(DirectRef(5, 32, directkey.PRIME - 1))
    over = uuid.UUID(int=kid.int + 1)  # the tag's low bits: 2^61 - 1, not a field element
    assert directkey.decode_id(over) is None


@pytest.mark.parametrize(
    "ref",
    [
        DirectRef(-1, 32, 0),
        DirectRef(directkey.MAX_START + 1, 32, 0),
        DirectRef(0, 0, 0),
        DirectRef(0, directkey.MAX_SIZE_BYTES + 1, 0),
        DirectRef(0, 32, directkey.PRIME),
    ],
)
def test_encoding_refuses_what_does_not_fit(ref: DirectRef) -> None:
    with pytest.raises(DirectKeyError):
        directkey.encode_id(ref)


@given(bindings, starts, st.integers(1, 64), st.binary(min_size=16, max_size=16))
def test_issue_then_verify(b: Binding, start: int, size: int, mac_key: bytes) -> None:
    material = mac_key + os.urandom(size)
    kid, key = directkey.issue(b, start, material)
    assert key == material[directkey.MAC_KEY_BYTES :]  # the key is the slice after the MAC key
    ref = directkey.decode_id(kid)
    assert ref == DirectRef(start, size, ref.tag if ref else -1)
    assert ref is not None and directkey.verify(b, ref, mac_key)


def test_the_tag_binds_every_field_and_the_mac_key() -> None:
    mac_key = os.urandom(16)
    kid, _ = directkey.issue(B, 1000, mac_key + bytes(32))
    ref = directkey.decode_id(kid)
    assert ref is not None and directkey.verify(B, ref, mac_key)
    for other in (
        Binding("a", "a-b", "alice", "carol"),  # another slave SAE
        Binding("a", "a-b", "dave", "bob"),  # another master SAE
        Binding("a", "a-c", "alice", "bob"),  # another link
        Binding("b", "a-b", "alice", "bob"),  # the other stream
        Binding("a", "a-b", "alicebob", ""),  # the same characters split otherwise
    ):
        assert not directkey.verify(other, ref, mac_key)
    assert not directkey.verify(B, DirectRef(1001, 32, ref.tag), mac_key)
    assert not directkey.verify(B, DirectRef(1000, 31, ref.tag), mac_key)
    assert not directkey.verify(B, DirectRef(1000, 32, (ref.tag + 1) % directkey.PRIME), mac_key)
    assert not directkey.verify(B, ref, bytes(a ^ 1 for a in mac_key))
    assert not directkey.verify(B, ref, mac_key[:15])  # a short MAC key: no, not an exception


@given(st.binary(min_size=16, max_size=16), st.binary(min_size=1, max_size=64))
def test_the_tag_does_not_depend_on_the_key_bits(mac_key: bytes, key: bytes) -> None:
    """Only the MAC key enters the tag: two slices with the same MAC key and different keys give
    the same ID (the ID says nothing about the key delivered)."""
    kid1, k1 = directkey.issue(B, 7, mac_key + key)
    kid2, k2 = directkey.issue(B, 7, mac_key + bytes(a ^ 0xFF for a in key))
    assert kid1 == kid2 and k1 != k2


def test_flipping_any_bit_of_an_id_is_caught() -> None:
    """Every one of the 122 payload bits matters: a flipped bit either leaves the format or
    fails the tag (with a fixed MAC key, none of 128 flips verifies)."""
    mac_key = os.urandom(16)
    kid, _ = directkey.issue(B, 123456, mac_key + bytes(32))
    for bit in range(128):
        ref = directkey.decode_id(uuid.UUID(int=kid.int ^ (1 << bit)))
        assert ref is None or not directkey.verify(B, ref, mac_key)


def test_issue_refuses_a_slice_without_key() -> None:
    with pytest.raises(DirectKeyError):
        directkey.issue(B, 0, bytes(16))
    with pytest.raises(DirectKeyError):
        directkey.issue(Binding("a" * 300, "l", "m", "s"), 0, bytes(48))
