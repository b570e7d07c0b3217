"""A node's relay records, persisted: begin, ack, void, legs (store part).

Relay semantics are those of :mod:`keyserver.kms.relay` and docs/network.md; this part keeps a
node's side of every relay in five tables of the node's store (:mod:`keyserver.kms.nodestore`):

* as initiator: ``relays_out`` (a relay sent and not yet acked: ``pending``, or ``voiding``
  once a void is queued) and ``void_out`` (voids to tell the target);
* as target: ``shares`` (the legs of a multipath relay that are in, until all are),
  ``ack_out`` (acks to send to the initiator) and ``tombstones`` (voided relays, refused until
  their time is up).

Every public write is one atomic transaction of the shared :class:`~keyserver.kms.storedb.StoreDb`
(or part of an enclosing one). The steps that go with link key or held keys in one
transaction (starting a relay, accepting a leg, a void from the initiator, expiry) are composed
by :class:`~keyserver.kms.nodestore.NodeStore`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import Enum
from typing import Literal

from keyserver.kms.relay import AckStatus
from keyserver.kms.storedb import StoreDb, ids_from_json, ids_to_json


@dataclass(frozen=True)
class RelayOut:
    """A relay this node initiated, until the target acks it or the void is delivered."""

    relay_id: uuid.UUID
    master: str
    slave: str
    target_node: str
    key_ids: tuple[uuid.UUID, ...]
    state: Literal["pending", "voiding"]
    deadline_ms: int


@dataclass(frozen=True)
class VoidOut:
    relay_id: uuid.UUID
    target_node: str
    key_ids: tuple[uuid.UUID, ...]
    until_ms: int


@dataclass(frozen=True)
class AckOut:
    relay_id: uuid.UUID
    initiator_node: str
    ack_url: str
    key_ids: tuple[uuid.UUID, ...]
    status: AckStatus
    reason: str


@dataclass(frozen=True)
class FinalHop:
    """What the target node stores when the last hop of one leg arrives."""

    relay_id: uuid.UUID
    key_ids: tuple[uuid.UUID, ...]
    leg: int
    legs: int
    master: str
    slave: str
    initiator_node: str
    ack_url: str
    shares: tuple[bytes, ...]
    deadline_ms: int
    expires_ms: int
    quota_bits: int  # most key bits held for one (master, slave) pair
    # the leg came straight from the initiator, so the reply to it is the ack: nothing queued
    ack_in_reply: bool = False


class FinalOutcome(Enum):
    COMPLETE = "complete"  # every leg is in: the keys are held for the slave, ack queued
    PARTIAL = "partial"  # this leg is stored, others are missing
    VOIDED = "voided"  # the relay was voided before this leg arrived
    QUOTA = "quota"  # the pair holds too much uncollected key


class RelayJournal:
    """Relay records of this node (tables relays_out, void_out, shares, ack_out, tombstones)."""

    def __init__(self, db: StoreDb) -> None:
        self._db = db.conn
        self._tx = db.transaction

    # -- relays this node initiated ----------------------------------------------------------
    def begin(self, r: RelayOut) -> None:
        """Record a relay as pending (its link key is spent in the same transaction)."""
        with self._tx():
            self._db.execute(
                "INSERT INTO relays_out VALUES (?, ?, ?, ?, ?, 'pending', ?)",
                (
                    str(r.relay_id),
                    r.master,
                    r.slave,
                    r.target_node,
                    ids_to_json(r.key_ids),
                    r.deadline_ms,
                ),
            )

    def state(self, relay_id: uuid.UUID) -> str | None:
        row = self._db.execute(
            "SELECT state FROM relays_out WHERE relay_id=?", (str(relay_id),)
        ).fetchone()
        return None if row is None else str(row[0])

    def deliver(self, relay_id: uuid.UUID) -> bool:
        """pending -> delivered (row gone); False if it is no longer pending (voided)."""
        with self._tx():
            cur = self._db.execute(
                "DELETE FROM relays_out WHERE relay_id=? AND state='pending'", (str(relay_id),)
            )
            return cur.rowcount == 1

    def void(self, relay_id: uuid.UUID, until_ms: int) -> bool:
        """pending -> voiding, with a void queued for the target; False if already delivered."""
        with self._tx():
            row = self._db.execute(
                "SELECT target_node, key_ids, state FROM relays_out WHERE relay_id=?",
                (str(relay_id),),
            ).fetchone()
            if row is None:
                return False
            if row[2] == "pending":
                self._db.execute(
                    "UPDATE relays_out SET state='voiding' WHERE relay_id=?", (str(relay_id),)
                )
                self._db.execute(
                    "INSERT OR IGNORE INTO void_out VALUES (?, ?, ?, ?)",
                    (str(relay_id), row[0], row[1], until_ms),
                )
            return True

    def void_pending(self, until_ms: int) -> int:
        """After a restart: no master SAE is waiting any more, so every pending relay is voided."""
        ids = [
            uuid.UUID(r[0])
            for r in self._db.execute(
                "SELECT relay_id FROM relays_out WHERE state='pending'"
            ).fetchall()
        ]
        for rid in ids:
            self.void(rid, until_ms)
        return len(ids)

    def voids_out(self, limit: int = 100) -> list[VoidOut]:
        return [
            VoidOut(uuid.UUID(r), t, ids_from_json(k), int(u))
            for r, t, k, u in self._db.execute(
                "SELECT relay_id, target_node, key_ids, until_ms FROM void_out LIMIT ?", (limit,)
            )
        ]

    def void_done(self, relay_id: uuid.UUID) -> None:
        with self._tx():
            self._db.execute("DELETE FROM void_out WHERE relay_id=?", (str(relay_id),))
            self._db.execute("DELETE FROM relays_out WHERE relay_id=?", (str(relay_id),))

    def pending_count(self) -> int:
        return int(
            self._db.execute("SELECT COUNT(*) FROM relays_out WHERE state='pending'").fetchone()[0]
        )

    # -- relays arriving here (target side) --------------------------------------------------
    def tombstoned(self, relay_id: uuid.UUID) -> bool:
        return (
            self._db.execute(
                "SELECT 1 FROM tombstones WHERE relay_id=?", (str(relay_id),)
            ).fetchone()
            is not None
        )

    def assemble(self, f: FinalHop) -> bytes | None:
        """This leg's shares XORed with every other leg's, or None while a leg is missing (this
        one is kept until the others arrive)."""
        if f.legs == 1:  # nothing to wait for or combine
            return b"".join(f.shares)
        rid = str(f.relay_id)
        with self._tx():
            self._db.execute(
                "INSERT OR IGNORE INTO shares VALUES (?, ?, ?, ?, ?)",
                (rid, f.leg, f.legs, b"".join(f.shares), f.deadline_ms),
            )
            rows = self._db.execute(
                "SELECT leg, material FROM shares WHERE relay_id=? ORDER BY leg", (rid,)
            ).fetchall()
            if len(rows) < f.legs:
                return None
            total = int.from_bytes(rows[0][1], "big")
            for _, mat in rows[1:]:
                total ^= int.from_bytes(mat, "big")
            self._db.execute("DELETE FROM shares WHERE relay_id=?", (rid,))
            return total.to_bytes(len(rows[0][1]), "big")

    def refuse(self, relay_id: uuid.UUID, until_ms: int) -> None:
        """Tombstone a relay refused at its arrival (the SAE pair's quota): later legs are
        refused until `until_ms`."""
        with self._tx():
            self._db.execute(
                "INSERT OR IGNORE INTO tombstones VALUES (?, ?)", (str(relay_id), until_ms)
            )

    def void_in(self, relay_id: uuid.UUID, until_ms: int) -> int:
        """The initiator voids a relay: drop its partial legs and queued ack, and refuse it
        until `until_ms`. Returns the number of partial legs dropped."""
        rid = str(relay_id)
        with self._tx():
            n = int(self._db.execute("DELETE FROM shares WHERE relay_id=?", (rid,)).rowcount)
            self._db.execute("DELETE FROM ack_out WHERE relay_id=?", (rid,))
            self._db.execute(
                "INSERT INTO tombstones VALUES (?, ?) ON CONFLICT(relay_id) DO UPDATE SET "
                "until_ms=MAX(until_ms, excluded.until_ms)",
                (rid, until_ms),
            )
            return n

    def queue_ack(self, f: FinalHop, status: AckStatus, reason: str) -> None:
        with self._tx():
            self._db.execute(
                "INSERT OR REPLACE INTO ack_out VALUES (?, ?, ?, ?, ?, ?)",
                (
                    str(f.relay_id),
                    f.initiator_node,
                    f.ack_url,
                    ids_to_json(f.key_ids),
                    status.value,
                    reason,
                ),
            )

    def acks_out(self, limit: int = 100) -> list[AckOut]:
        return [
            AckOut(uuid.UUID(r), n, u, ids_from_json(k), AckStatus(s), reason)
            for r, n, u, k, s, reason in self._db.execute(
                "SELECT relay_id, initiator_node, ack_url, key_ids, status, reason FROM ack_out "
                "LIMIT ?",
                (limit,),
            )
        ]

    def ack_done(self, relay_id: uuid.UUID) -> None:
        with self._tx():
            self._db.execute("DELETE FROM ack_out WHERE relay_id=?", (str(relay_id),))

    def expire(self, now_ms: int) -> None:
        """Drop stale partial legs and tombstones, and pending relays long past their deadline."""
        with self._tx():
            self._db.execute("DELETE FROM shares WHERE deadline_ms < ?", (now_ms - 60_000,))
            self._db.execute("DELETE FROM tombstones WHERE until_ms < ?", (now_ms,))
            self._db.execute(
                "DELETE FROM relays_out WHERE state='pending' AND deadline_ms < ?",
                (now_ms - 600_000,),
            )
