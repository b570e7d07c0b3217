"""The relay's sequencing, sans-I/O: the initiator, transit and target roles, ack and void.

:mod:`keyserver.kms.relay` is the wire format and the cryptography of one hop message; this
module decides what a node does with them, given messages, results and the time, and returns
actions and outcomes (frozen dataclasses). The relay agent drives it
(:mod:`keyserver.kms.relayinitiator` for the initiator role, :mod:`keyserver.kms.relayreceiver`
for transit and target): it owns the store, the HTTP clients and the timers, and does what the
machine says in the order it says.

One relay, seen from each role (ETSI GS QKD 020 shaped: ``POST /kmapi/v1/ext_keys``, an ack to
the initiator's ``ack_callback_url``, ``/kmapi/v1/ext_keys/void``):

* **initiator** (:class:`InitiatorRelay`): the agent journals the relay and spends the first
  link of each leg in one store transaction *before* anything is sent; the machine then turns
  the slices into the hop-1 messages and the keys (:meth:`InitiatorRelay.journaled`). The hop
  replies (:meth:`~InitiatorRelay.on_replies`) and an ack or the deadline
  (:meth:`~InitiatorRelay.on_ack`, :meth:`~InitiatorRelay.on_timeout`) lead to
  :class:`Commit` (an ack ``relayed``: the agent marks the journaled relay delivered, and only
  if that succeeds, :meth:`~InitiatorRelay.on_commit`, are the keys given to the master SAE) or
  to :class:`Failed` (the agent voids the journaled relay; the void outbox tells the target
  until it answers). Exactly once: the keys reach the master only if the relay is still
  pending when the ack arrives, and a voided relay is never delivered.
* **transit** (:func:`check_hop`, :func:`hop_role`, :func:`forward_message`): the incoming slice
  is consumed and the next link's spent in one store transaction before the next hop is sent;
  a next hop refused comes back to the initiator as a ``failed`` ack (:func:`failed_hop_ack`).
* **target** (:func:`check_target`, :func:`ack_in_reply`): the store holds the keys and queues
  the ack in the transaction that accepts the last leg; a leg sent straight to the target
  (hop 1) is acknowledged by the reply itself, with no ack message.
* **ack and void**: who may acknowledge (:meth:`InitiatorRelay.may_ack`) or void
  (:func:`may_void`) a relay, held keys that expire (:func:`expired_ack`), and the outboxes'
  retry schedule (:func:`outbox_retry`, :func:`outbox_gives_up`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from keyserver.etsi014.key import Key
from keyserver.kms import relay
from keyserver.kms.relay import Ack, AckStatus, HopMessage, RelayHeader
from keyserver.kms.routing import Route

MAX_ATTEMPTS = 3  # relays tried for one request (a failure that a retry may cure)
RETRY_MARGIN_S = 1.0  # no new attempt within this long of the request's deadline
ACK_WAIT_MIN_S = 0.05  # the least time given to an ack once the hops are accepted
VOID_MARGIN_MS = 60_000  # a void's tombstone outlives the relay's deadline by this much
BATCH_MAX_BYTES = 65_536  # key bytes of one merged relay (enc_keys requests queued together)
OUTBOX_FIRST_S = 0.5  # an outbox that could not send everything looks again after this
OUTBOX_MAX_S = 10.0  # ... doubling up to this
QUOTA_REASON = "the slave SAE's pair holds too much key not yet collected"
EXPIRED_REASON = "expired before the slave SAE collected it"


class Role(Enum):
    """What a node is for one relay."""

    INITIATOR = "initiator"
    TRANSIT = "transit"
    TARGET = "target"


class InitiatorState(Enum):
    SENDING = "sending"  # journaled, hop-1 messages out
    AWAITING_ACK = "awaiting_ack"  # every hop accepted, the target has not answered yet
    COMMITTING = "committing"  # acknowledged: the store marks it delivered
    DELIVERED = "delivered"
    FAILED = "failed"


class RelayStateError(RuntimeError):
    """An event the initiator machine cannot take in its state (a bug in the adapter)."""


@dataclass(frozen=True)
class Refusal:
    """A message refused: the HTTP status and the one line that says why."""

    status: int
    message: str


class HopStatus(Enum):
    """The ``status`` of a node's 202 reply to a hop (``POST /kmapi/v1/ext_keys``)."""

    ACCEPTED = "accepted"  # a transit node took it and sends it on
    COMPLETE = "complete"  # the target: every leg is in, the keys are held for the slave
    PARTIAL = "partial"  # the target: this leg is stored, others are missing
    VOIDED = "voided"  # the target: the relay was voided before this leg arrived
    QUOTA = "quota"  # the target: the SAE pair holds too much uncollected key

    @classmethod
    def parse(cls, value: object) -> HopStatus | None:
        """The status of a reply, or None for anything else (no status, a future one)."""
        return next((s for s in cls if s.value == value), None)


@dataclass(frozen=True)
class HopReply:
    """What one hop POST came back with: ``error`` (None once the next node accepted it) and
    the reply's status (the target's leg outcome when the hop went straight to it)."""

    error: str | None
    status: HopStatus | None = None


@dataclass(frozen=True)
class AwaitAck:
    """Every hop was accepted: wait this long for the target's ack."""

    seconds: float


@dataclass(frozen=True)
class Commit:
    """The target acknowledged: mark the journaled relay delivered, then :meth:`on_commit`."""

    relay_id: uuid.UUID


@dataclass(frozen=True)
class Delivered:
    """The keys for the master SAE."""

    keys: tuple[Key, ...]


@dataclass(frozen=True)
class Failed:
    """Void the journaled relay (tombstone until ``void_until_ms``); ``retry``: a new relay
    may succeed (a hop refused, or the relay failed on the way), else it would fail alike."""

    relay_id: uuid.UUID
    reason: str
    retry: bool
    void_until_ms: int


Outcome = Commit | Delivered | Failed


class InitiatorRelay:
    """One relay this node started, from its journaled slices to delivered or failed."""

    def __init__(
        self,
        headers: Sequence[RelayHeader],
        slices: Sequence[bytes],
        deadline: float,
        timeout_s: float,
    ) -> None:
        """Use :meth:`journaled`."""
        h = headers[0]
        self.relay_id = h.relay_id
        self.key_ids = h.key_ids
        self.target_node = h.target_node
        self.deadline = deadline  # monotonic seconds
        self.timeout_s = timeout_s
        self.headers = tuple(headers)
        self.messages = tuple(relay.seal(x, None, s) for x, s in zip(headers, slices, strict=True))
        shares = [relay.hop1_keys(x, s) for x, s in zip(headers, slices, strict=True)]
        self._keys = tuple(relay.combine_shares(shares))
        self.nodes = frozenset(n for x in headers for n in x.route)
        self.state = InitiatorState.SENDING
        self.ack: Ack | None = None

    @classmethod
    def journaled(
        cls,
        *,
        relay_id: uuid.UUID,
        key_ids: tuple[uuid.UUID, ...],
        size: int,
        node: str,
        target_node: str,
        master: str,
        slave: str,
        routes: Sequence[Route],
        slices: Sequence[tuple[int, bytes]],
        deadline: float,
        deadline_ms: int,
        ack_url: str,
        timeout_s: float,
    ) -> InitiatorRelay:
        """The relay whose first links' slices (start, bytes), one per route, the store has
        journaled: its hop-1 messages (:attr:`messages`) carry no key value; the keys are the
        XOR of the legs' slices."""
        headers = [
            RelayHeader(
                relay_id,
                key_ids,
                size,
                node,
                target_node,
                master,
                slave,
                r.nodes,
                1,
                leg,
                len(routes),
                r.links[0],
                start,
                deadline_ms,
                ack_url,
            )
            for leg, (r, (start, _)) in enumerate(zip(routes, slices, strict=True))
        ]
        return cls(headers, [m for _, m in slices], deadline, timeout_s)

    @property
    def deadline_ms(self) -> int:
        return self.headers[0].deadline_ms

    def may_ack(self, caller: str, ack: Ack) -> bool:
        """Any node of the routes may report a failure; only the target a relay delivered."""
        return caller in self.nodes and (
            ack.status is not AckStatus.RELAYED or caller == self.target_node
        )

    def on_replies(self, replies: Sequence[HopReply], now: float) -> Outcome | AwaitAck:
        """The hop-1 POSTs came back (one reply per leg, in order)."""
        self._expect(InitiatorState.SENDING)
        errors = [r.error for r in replies if r.error is not None]
        if errors:
            return self._fail(errors[0], retry=True)
        statuses = [r.status for r, h in zip(replies, self.headers, strict=True) if h.is_last]
        ack = ack_in_reply(self.relay_id, self.key_ids, statuses)
        if ack is not None:
            self.state = InitiatorState.AWAITING_ACK
            return self.on_ack(ack)
        self.state = InitiatorState.AWAITING_ACK
        return AwaitAck(max(ACK_WAIT_MIN_S, self.deadline - now))

    def on_ack(self, ack: Ack) -> Commit | Failed:
        """The target's ack (or a node's failure report), from :meth:`may_ack` callers."""
        self._expect(InitiatorState.AWAITING_ACK)
        self.ack = ack
        if ack.status is AckStatus.RELAYED:
            self.state = InitiatorState.COMMITTING
            return Commit(self.relay_id)
        return self._fail(self._ack_text(ack), retry=ack.status is AckStatus.FAILED)

    def on_timeout(self) -> Failed:
        self._expect(InitiatorState.AWAITING_ACK)
        return self._fail(
            f"no acknowledgement from {self.target_node} within {self.timeout_s:g} s",
            retry=False,
        )

    def on_commit(self, delivered: bool) -> Delivered | Failed:
        """Whether the store marked the relay delivered (False: it was voided meanwhile)."""
        self._expect(InitiatorState.COMMITTING)
        assert self.ack is not None
        if not delivered:
            return self._fail(self._ack_text(self.ack), retry=False)
        self.state = InitiatorState.DELIVERED
        return Delivered(tuple(Key.of(k, m) for k, m in zip(self.key_ids, self._keys, strict=True)))

    @staticmethod
    def _ack_text(ack: Ack) -> str:
        return f"{ack.status.value}: {ack.reason}"

    def _fail(self, reason: str, retry: bool) -> Failed:
        self.state = InitiatorState.FAILED
        return Failed(self.relay_id, reason, retry, self.deadline_ms + VOID_MARGIN_MS)

    def _expect(self, state: InitiatorState) -> None:
        if self.state is not state:
            raise RelayStateError(f"relay {self.relay_id} is {self.state.value}, not {state.value}")


def ack_in_reply(
    relay_id: uuid.UUID, key_ids: tuple[uuid.UUID, ...], statuses: Sequence[HopStatus | None]
) -> Ack | None:
    """The ack that the target's replies to legs sent straight to it amount to, if any."""
    if HopStatus.COMPLETE in statuses:
        return Ack(relay_id, key_ids, AckStatus.RELAYED)
    if HopStatus.QUOTA in statuses:
        return Ack(relay_id, key_ids, AckStatus.FAILED, QUOTA_REASON)
    return None


def retry_again(failed: Failed, attempt: int, now: float, deadline: float) -> bool:
    """After attempt number `attempt` (0-based) failed: try a new relay?"""
    return failed.retry and attempt + 1 < MAX_ATTEMPTS and now <= deadline - RETRY_MARGIN_S


def batch_take(numbers: Sequence[int], size_bits: int) -> int:
    """How many of the queued requests (their key counts, oldest first) the next merged relay
    carries: at least one, then as many as fit in :data:`relay.MAX_KEYS` keys and
    :data:`BATCH_MAX_BYTES` bytes."""
    n = taken = 0
    for number in numbers:
        if taken and (
            n + number > relay.MAX_KEYS or (n + number) * size_bits // 8 > BATCH_MAX_BYTES
        ):
            break
        n += number
        taken += 1
    return taken


# -- transit and target ------------------------------------------------------------------------
def check_hop(
    h: RelayHeader,
    *,
    node: str,
    caller: str,
    link_neighbour: str | None,
    initiator_ack_url: str,
    now_ms: int,
) -> Refusal | None:
    """A hop message's header against this node (`link_neighbour`: the other end of the link it
    names, None if that link is not this node's), before any key is looked at."""
    if h.receiver != node or h.sender != caller:
        return Refusal(401, "this hop is not from the route's previous node to this node")
    if link_neighbour != caller:
        return Refusal(400, f"link {h.link} does not join {caller} and {node}")
    if h.ack_url != initiator_ack_url:
        return Refusal(400, "ack_callback_url is not the initiator node's")
    if h.deadline_ms < now_ms:
        return Refusal(503, "relay deadline passed")
    return None


def hop_role(h: RelayHeader) -> Role:
    """The receiver's role for this hop message."""
    return Role.TARGET if h.is_last else Role.TRANSIT


def next_node(h: RelayHeader) -> str:
    """Where a transit node sends the keys on."""
    return h.route[h.hop + 1]


def forward_message(
    h: RelayHeader, keys: Sequence[bytes], link: str, pad_start: int, link_slice: bytes
) -> HopMessage:
    """The next hop's message: the keys under the next link's slice (spent at `pad_start`)."""
    return relay.seal(h.next_hop(link, pad_start), keys, link_slice)


def failed_hop_ack(h: RelayHeader, error: str) -> Ack:
    """What a transit node tells the initiator when the next node refused the hop."""
    return Ack(h.relay_id, h.key_ids, AckStatus.FAILED, error)


def check_target(
    h: RelayHeader, *, node: str, local_saes: Sequence[str], initiator_sae_node: str | None
) -> Refusal | None:
    """The last hop's SAEs: the slave at this node, the master at the initiator node."""
    if h.target_sae not in local_saes:
        return Refusal(400, f"SAE {h.target_sae} is not at node {node}")
    if initiator_sae_node != h.initiator_node:
        return Refusal(
            400, f"SAE {h.initiator_sae} is not at the initiator node {h.initiator_node}"
        )
    return None


def acked_in_reply(h: RelayHeader) -> bool:
    """A leg sent straight to the target (hop 1) is acknowledged by the reply itself."""
    return h.hop == 1


# -- ack and void --------------------------------------------------------------------------------
def may_void(initiator: str | None, caller: str) -> bool:
    """Only a relay's initiator voids it (a relay unknown here may be voided by anyone: the
    void leaves a tombstone that refuses its legs)."""
    return initiator is None or initiator == caller


def expired_ack(relay_id: uuid.UUID, key_ids: tuple[uuid.UUID, ...]) -> Ack:
    """What the target tells the initiator of held keys the slave never collected."""
    return Ack(relay_id, key_ids, AckStatus.VOIDED, EXPIRED_REASON)


def outbox_retry(left: bool, retry: float | None) -> float | None:
    """An outbox's next look: on its event only when empty, else 0.5 s doubling to 10 s."""
    if not left:
        return None
    return OUTBOX_FIRST_S if not retry else min(2 * retry, OUTBOX_MAX_S)


def outbox_gives_up(status: int) -> bool:
    """An ack the initiator refused as malformed or unauthorised is dropped, not retried."""
    return status in (400, 401)
