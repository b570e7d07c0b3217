"""The relay machine without any I/O: an initiator's relay from journaled slices to delivered
or failed, a hop through transit to target, who may ack or void, the outboxes' schedule."""

from __future__ import annotations

import os
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyserver.kms import relay, relaymachine
from keyserver.kms.relay import Ack, AckStatus
from keyserver.kms.relayjournal import FinalOutcome
from keyserver.kms.relaymachine import (
    AwaitAck,
    Commit,
    Delivered,
    Failed,
    HopReply,
    HopStatus,
    InitiatorRelay,
    InitiatorState,
    Refusal,
    RelayStateError,
    Role,
)
from keyserver.kms.routing import Route

SIZE = 32  # bytes per key
ACK_URL = "https://127.0.0.1:9000/kmapi/v1/ext_keys/ack"


def _relay(
    routes: list[Route], number: int = 2, deadline: float = 10.0
) -> tuple[InitiatorRelay, list[bytes]]:
    slices = [os.urandom(number * SIZE + relay.MAC_KEY_BYTES) for _ in routes]
    m = InitiatorRelay.journaled(
        relay_id=uuid.uuid4(),
        key_ids=tuple(uuid.uuid4() for _ in range(number)),
        size=SIZE,
        node="a",
        target_node=routes[0].nodes[-1],
        master="alice",
        slave="dave",
        routes=routes,
        slices=[(100 * i, s) for i, s in enumerate(slices)],
        deadline=deadline,
        deadline_ms=5_000,
        ack_url=ACK_URL,
        timeout_s=4.0,
    )
    return m, slices


ONE_HOP = [Route(("a", "d"), ("a-d",), 1.0)]
TWO_HOPS = [Route(("a", "b", "d"), ("a-b", "b-d"), 2.0)]
TWO_LEGS = [
    Route(("a", "b", "d"), ("a-b", "b-d"), 2.0),
    Route(("a", "c", "d"), ("a-c", "c-d"), 2.0),
]


def _xor_all(parts: list[bytes]) -> bytes:
    out = parts[0]
    for p in parts[1:]:
        out = relay.xor(out, p)
    return out


def test_one_hop_relay_is_acknowledged_by_the_targets_reply() -> None:
    m, slices = _relay(ONE_HOP)
    assert [x.values for x in m.messages] == [None]  # hop 1 carries no key value
    assert m.messages[0].header.pad_start == 0 and m.messages[0].header.is_last
    out = m.on_replies([HopReply(None, HopStatus.COMPLETE)], now=0.0)
    states = [m.state]
    assert out == Commit(m.relay_id)
    done = m.on_commit(True)
    states.append(m.state)
    assert states == [InitiatorState.COMMITTING, InitiatorState.DELIVERED]
    assert isinstance(done, Delivered)
    assert [k.key_id for k in done.keys] == list(m.key_ids)
    assert [k.material for k in done.keys] == [slices[0][:SIZE], slices[0][SIZE : 2 * SIZE]]


def test_multipath_keys_are_the_xor_of_the_legs_and_wait_for_the_ack() -> None:
    m, slices = _relay(TWO_LEGS, number=1)
    assert [x.header.leg for x in m.messages] == [0, 1]
    assert [x.header.pad_start for x in m.messages] == [0, 100]
    assert m.nodes == {"a", "b", "c", "d"}
    wait = m.on_replies(
        [HopReply(None, HopStatus.ACCEPTED), HopReply(None, HopStatus.ACCEPTED)], now=7.5
    )
    assert wait == AwaitAck(2.5) and m.state is InitiatorState.AWAITING_ACK
    assert m.on_ack(Ack(m.relay_id, m.key_ids, AckStatus.RELAYED)) == Commit(m.relay_id)
    done = m.on_commit(True)
    assert isinstance(done, Delivered)
    assert done.keys[0].material == _xor_all([s[:SIZE] for s in slices])


def test_ack_wait_is_never_zero_past_the_deadline() -> None:
    m, _ = _relay(TWO_HOPS)
    assert m.on_replies([HopReply(None, HopStatus.ACCEPTED)], now=99.0) == AwaitAck(
        relaymachine.ACK_WAIT_MIN_S
    )


def test_a_refused_hop_fails_the_relay_and_allows_a_retry() -> None:
    m, _ = _relay(TWO_LEGS)
    out = m.on_replies(
        [HopReply(None, HopStatus.ACCEPTED), HopReply("hop a -> c refused: 503")], 0.0
    )
    assert out == Failed(m.relay_id, "hop a -> c refused: 503", True, 5_000 + 60_000)
    assert m.state is InitiatorState.FAILED
    with pytest.raises(RelayStateError):
        m.on_timeout()


def test_failed_ack_retries_voided_ack_does_not() -> None:
    m, _ = _relay(TWO_HOPS)
    m.on_replies([HopReply(None, HopStatus.ACCEPTED)], 0.0)
    out = m.on_ack(Ack(m.relay_id, m.key_ids, AckStatus.FAILED, "no key"))
    assert isinstance(out, Failed) and out.retry and out.reason == "failed: no key"
    m2, _ = _relay(TWO_HOPS)
    m2.on_replies([HopReply(None, HopStatus.ACCEPTED)], 0.0)
    out2 = m2.on_ack(Ack(m2.relay_id, m2.key_ids, AckStatus.VOIDED, "expired"))
    assert isinstance(out2, Failed) and not out2.retry


def test_quota_reply_is_a_failed_ack() -> None:
    m, _ = _relay(ONE_HOP)
    out = m.on_replies([HopReply(None, HopStatus.QUOTA)], 0.0)
    assert isinstance(out, Failed) and out.retry
    assert out.reason == f"failed: {relaymachine.QUOTA_REASON}"


def test_timeout_and_a_commit_the_store_refused_void_without_retry() -> None:
    m, _ = _relay(TWO_HOPS)
    m.on_replies([HopReply(None, HopStatus.ACCEPTED)], 0.0)
    out = m.on_timeout()
    assert out.reason == "no acknowledgement from d within 4 s" and not out.retry
    m2, _ = _relay(TWO_HOPS)
    m2.on_replies([HopReply(None, HopStatus.ACCEPTED)], 0.0)
    m2.on_ack(Ack(m2.relay_id, m2.key_ids, AckStatus.RELAYED))
    out2 = m2.on_commit(False)  # voided meanwhile: never delivered
    assert isinstance(out2, Failed) and out2.reason == "relayed: " and not out2.retry


def test_events_out_of_order_are_refused() -> None:
    m, _ = _relay(TWO_HOPS)
    with pytest.raises(RelayStateError):
        m.on_ack(Ack(m.relay_id, m.key_ids, AckStatus.RELAYED))
    with pytest.raises(RelayStateError):
        m.on_commit(True)
    assert m.state is InitiatorState.SENDING


def test_who_may_acknowledge() -> None:
    m, _ = _relay(TWO_HOPS)
    relayed = Ack(m.relay_id, m.key_ids, AckStatus.RELAYED)
    failed = Ack(m.relay_id, m.key_ids, AckStatus.FAILED, "x")
    assert m.may_ack("d", relayed) and m.may_ack("b", failed)
    assert not m.may_ack("b", relayed)  # only the target says it is delivered
    assert not m.may_ack("z", failed)  # not on the route


def test_a_hop_through_transit_to_target() -> None:
    m, slices = _relay(TWO_HOPS)
    hop1 = m.messages[0]
    h = hop1.header
    assert relaymachine.hop_role(h) is Role.TRANSIT and relaymachine.next_node(h) == "d"
    keys = relay.open_hop(hop1, slices[0])
    out_slice = os.urandom(h.slice_length)
    hop2 = relaymachine.forward_message(h, keys, "b-d", 7, out_slice)
    assert hop2.header.hop == 2 and hop2.header.link == "b-d" and hop2.header.pad_start == 7
    assert relaymachine.hop_role(hop2.header) is Role.TARGET
    assert relay.open_hop(hop2, out_slice) == keys
    assert relaymachine.acked_in_reply(h) and not relaymachine.acked_in_reply(hop2.header)
    assert relaymachine.failed_hop_ack(hop2.header, "down") == Ack(
        m.relay_id, m.key_ids, AckStatus.FAILED, "down"
    )


def test_check_hop_in_order() -> None:
    m, _ = _relay(TWO_HOPS)
    h = m.messages[0].header

    def check(
        node: str = "b",
        caller: str = "a",
        neighbour: str | None = "a",
        url: str = ACK_URL,
        now_ms: int = 0,
    ) -> Refusal | None:
        return relaymachine.check_hop(
            h,
            node=node,
            caller=caller,
            link_neighbour=neighbour,
            initiator_ack_url=url,
            now_ms=now_ms,
        )

    assert check(now_ms=5_000) is None
    refused = [check(node="c"), check(caller="c"), check(neighbour=None), check(url=ACK_URL + "x")]
    assert [r.status if r else None for r in refused] == [401, 401, 400, 400]
    assert check(now_ms=5_001) == Refusal(503, "relay deadline passed")


def test_check_target() -> None:
    m, _ = _relay(ONE_HOP)
    h = m.messages[0].header
    assert (
        relaymachine.check_target(h, node="d", local_saes=["dave"], initiator_sae_node="a") is None
    )
    r1 = relaymachine.check_target(h, node="d", local_saes=["carol"], initiator_sae_node="a")
    r2 = relaymachine.check_target(h, node="d", local_saes=["dave"], initiator_sae_node="b")
    assert r1 is not None and r1.status == 400 and "dave" in r1.message
    assert r2 is not None and r2.status == 400 and "alice" in r2.message


def test_void_and_expiry() -> None:
    assert relaymachine.may_void(None, "x") and relaymachine.may_void("a", "a")
    assert not relaymachine.may_void("a", "b")
    rid, kids = uuid.uuid4(), (uuid.uuid4(),)
    assert relaymachine.expired_ack(rid, kids).status is AckStatus.VOIDED
    assert relaymachine.outbox_gives_up(401) and relaymachine.outbox_gives_up(400)
    assert not relaymachine.outbox_gives_up(503) and not relaymachine.outbox_gives_up(0)


@given(st.lists(st.booleans(), max_size=12))
def test_outbox_retry_doubles_to_a_cap_and_rests_when_empty(lefts: list[bool]) -> None:
    retry: float | None = 0.0
    for left in lefts:
        nxt = relaymachine.outbox_retry(left, retry)
        if not left:
            assert nxt is None
        else:
            assert nxt is not None and relaymachine.OUTBOX_FIRST_S <= nxt <= 10.0
            assert nxt == (0.5 if not retry else min(2 * retry, 10.0))
        retry = nxt


@given(
    st.lists(st.integers(1, relay.MAX_KEYS), min_size=1, max_size=40),
    st.sampled_from([64, 256, 2048, 8192]),
)
def test_batch_take_fits_the_bounds(numbers: list[int], size_bits: int) -> None:
    n = relaymachine.batch_take(numbers, size_bits)
    assert 1 <= n <= len(numbers)
    keys = sum(numbers[:n])
    if n > 1:
        assert keys <= relay.MAX_KEYS
        assert keys * size_bits // 8 <= relaymachine.BATCH_MAX_BYTES
    if n < len(numbers):  # the next one would not have fit
        more = keys + numbers[n]
        assert more > relay.MAX_KEYS or more * size_bits // 8 > relaymachine.BATCH_MAX_BYTES


@given(st.integers(0, 5), st.floats(0, 100), st.booleans())
def test_retry_again(attempt: int, now: float, retry: bool) -> None:
    f = Failed(uuid.uuid4(), "x", retry, 0)
    again = relaymachine.retry_again(f, attempt, now, deadline=50.0)
    assert again == (retry and attempt < relaymachine.MAX_ATTEMPTS - 1 and now <= 49.0)


def test_hop_status_speaks_the_stores_leg_outcomes() -> None:
    """The target replies with its store's leg outcome: every one is a status the machine reads."""
    assert {o.value for o in FinalOutcome} <= {s.value for s in HopStatus}
    assert HopStatus.parse("complete") is HopStatus.COMPLETE
    assert HopStatus.parse("") is None and HopStatus.parse(None) is None
    assert HopStatus.parse(3) is None
