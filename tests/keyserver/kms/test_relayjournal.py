"""Relay records: an initiated relay is pending until acked or voided (never both), a voided one
queues its void; the target's tombstones, acks and partial legs."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from keyserver.kms.nodestore import NodeStore
from keyserver.kms.relay import AckStatus
from keyserver.kms.relayjournal import FinalHop, RelayJournal, RelayOut

FAR = 2**50


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[RelayJournal]:
    store = NodeStore(tmp_path / "n", "n")
    yield store.relays
    store.close()


def _relay(deadline_ms: int = FAR) -> RelayOut:
    return RelayOut(uuid.uuid4(), "alice", "bob", "d", (uuid.uuid4(),), "pending", deadline_ms)


def test_a_relay_is_delivered_or_voided_never_both(journal: RelayJournal) -> None:
    done, voided = _relay(), _relay()
    journal.begin(done)
    journal.begin(voided)
    assert journal.pending_count() == 2 and journal.state(done.relay_id) == "pending"
    assert journal.deliver(done.relay_id) and journal.state(done.relay_id) is None
    assert not journal.void(done.relay_id, FAR)  # delivered: nothing to void
    assert journal.void(voided.relay_id, 5)
    assert journal.state(voided.relay_id) == "voiding" and not journal.deliver(voided.relay_id)
    [v] = journal.voids_out()
    assert (v.relay_id, v.target_node, v.key_ids, v.until_ms) == (
        voided.relay_id,
        "d",
        voided.key_ids,
        5,
    )
    journal.void_done(voided.relay_id)
    assert journal.voids_out() == [] and journal.state(voided.relay_id) is None


def test_after_a_restart_every_pending_relay_is_voided(journal: RelayJournal) -> None:
    for _ in range(3):
        journal.begin(_relay())
    assert journal.void_pending(FAR) == 3
    assert journal.pending_count() == 0 and len(journal.voids_out()) == 3


def _leg(rid: uuid.UUID, leg: int) -> FinalHop:
    return FinalHop(
        rid, (uuid.uuid4(),), leg, 2, "alice", "bob", "a", "https://a/ack", (os.urandom(32),),
        1_000, FAR, 10**6,
    )  # fmt: skip


def test_target_side_records(journal: RelayJournal) -> None:
    rid = uuid.uuid4()
    leg0 = _leg(rid, 0)
    assert journal.assemble(leg0) is None  # one leg of two: kept
    journal.queue_ack(leg0, AckStatus.RELAYED, "")
    [ack] = journal.acks_out()
    assert (ack.relay_id, ack.status, ack.ack_url) == (rid, AckStatus.RELAYED, "https://a/ack")
    assert journal.void_in(rid, 2_000) == 1  # the partial leg dropped, the ack unqueued
    assert journal.acks_out() == [] and journal.tombstoned(rid)
    journal.expire(2_001)  # the tombstone's time is up
    assert not journal.tombstoned(rid)
    refused = uuid.uuid4()
    journal.refuse(refused, 3_000)
    assert journal.tombstoned(refused)
    stale = _leg(uuid.uuid4(), 1)  # a leg whose others never came
    assert journal.assemble(stale) is None
    journal.expire(1_000 + 60_001)
    assert journal.void_in(stale.relay_id, 0) == 0  # already dropped by expiry
