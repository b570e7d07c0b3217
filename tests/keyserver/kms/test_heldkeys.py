"""Keys held for SAEs: taken all or none and only by their pair, counted per pair, expired by
relay."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from keyserver.etsi014.key import Key
from keyserver.kms.heldkeys import HeldKeys, KeysNotFound
from keyserver.kms.nodestore import NodeStore

FAR = 2**50


@pytest.fixture
def held(tmp_path: Path) -> Iterator[HeldKeys]:
    store = NodeStore(tmp_path / "n", "n")
    yield store.held
    store.close()


def _key(fill: int) -> Key:
    return Key.of(uuid.uuid4(), bytes([fill]) * 32)


def test_keys_are_taken_all_or_none_and_only_by_their_pair(held: HeldKeys) -> None:
    k1, k2, other = _key(1), _key(2), _key(3)
    held.issue_local("alice", "bob", [k1, k2], FAR)
    held.issue_local("carol", "bob", [other], FAR)
    assert held.count() == 3 and held.count("alice", "bob") == 2
    assert held.bits("alice", "bob") == 2 * 256 and held.bits("bob", "alice") == 0
    with pytest.raises(KeysNotFound):  # one unknown ID: nothing is taken
        held.take("alice", "bob", [k1.key_id, uuid.uuid4()])
    with pytest.raises(KeysNotFound):  # another pair's key: the same answer
        held.take("alice", "bob", [other.key_id])
    assert held.count() == 3
    got = held.take("alice", "bob", [k2.key_id, k1.key_id])
    assert [(k.key_id, bytes(k.material)) for k in got] == [
        (k2.key_id, bytes(k2.material)),
        (k1.key_id, bytes(k1.material)),
    ]
    with pytest.raises(KeysNotFound):  # taken once
        held.take("alice", "bob", [k1.key_id])
    assert held.count() == 1


def test_relayed_keys_know_their_relay_and_expire_by_it(held: HeldKeys) -> None:
    r1, r2 = uuid.uuid4(), uuid.uuid4()
    a, b, c = _key(1), _key(2), _key(3)
    held.hold(r1, "alice", "bob", "x", [a, b], 1_000)
    held.hold(r2, "alice", "bob", "y", [c], FAR)
    assert held.holds_relay(r1) and held.initiator(r2) == "y"
    assert held.initiator(uuid.uuid4()) is None
    assert held.expire(999) == []
    assert held.expire(1_001) == [(r1, "x", (a.key_id, b.key_id))]
    assert not held.holds_relay(r1) and held.count() == 1
    assert held.drop_relay(r2) == 1 and held.count() == 0
