"""Keys a node holds for its slave SAEs, persisted: issue, take, expire (store part).

A key arrives here when a relay completes at this node (the target), or at once when both SAEs
are at this node. It is held in the ``held`` table of the node's store
(:mod:`keyserver.kms.nodestore`) for one (master, slave) SAE pair until the slave collects it
(``dec_keys``: the row is deleted in the transaction that returns it, and the database runs
with ``secure_delete``, so the key is overwritten in place) or until it expires.

Every public write is one atomic transaction of the shared :class:`~keyserver.kms.storedb.StoreDb`
(or part of an enclosing one). Holding a relayed key goes with the relay's records in
one transaction, composed by :class:`~keyserver.kms.nodestore.NodeStore`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from keyserver.etsi014.key import Key
from keyserver.kms.storedb import StoreDb, StoreError


class KeysNotFound(StoreError):
    """Key IDs not held for this SAE pair (unknown, delivered, or someone else's: same answer)."""


class HeldKeys:
    """Keys held for the SAEs of this node (table held)."""

    def __init__(self, db: StoreDb, node_id: str) -> None:
        self.node_id = node_id
        self._db = db.conn
        self._tx = db.transaction

    def hold(
        self,
        relay_id: uuid.UUID,
        master: str,
        slave: str,
        initiator_node: str,
        keys: Sequence[Key],
        expires_ms: int,
    ) -> None:
        """Hold the keys of a relay for the slave until `expires_ms`."""
        rid = str(relay_id)
        with self._tx():
            self._db.executemany(
                "INSERT INTO held VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (str(k.key_id), rid, master, slave, initiator_node, k.material, expires_ms)
                    for k in keys
                ],
            )

    def issue_local(self, master: str, slave: str, keys: Sequence[Key], expires_ms: int) -> None:
        """Both SAEs at this node: hold the keys for the slave at once."""
        self.hold(uuid.uuid4(), master, slave, self.node_id, keys, expires_ms)

    def take(self, master: str, slave: str, key_ids: Sequence[uuid.UUID]) -> list[Key]:
        """Remove and return held keys, all or none; KeysNotFound names no reason."""
        with self._tx():
            out = []
            for kid in key_ids:
                row = self._db.execute(
                    "SELECT material FROM held WHERE key_id=? AND master=? AND slave=?",
                    (str(kid), master, slave),
                ).fetchone()
                if row is None:
                    raise KeysNotFound()
                out.append(Key.of(kid, row[0]))
            self._db.executemany("DELETE FROM held WHERE key_id=?", [(str(k),) for k in key_ids])
            return out

    def count(self, master: str | None = None, slave: str | None = None) -> int:
        if master is None:
            return int(self._db.execute("SELECT COUNT(*) FROM held").fetchone()[0])
        return int(
            self._db.execute(
                "SELECT COUNT(*) FROM held WHERE master=? AND slave=?", (master, slave)
            ).fetchone()[0]
        )

    def bits(self, master: str, slave: str) -> int:
        """Key bits held for one SAE pair (what its quota bounds)."""
        return 8 * int(
            self._db.execute(
                "SELECT COALESCE(SUM(LENGTH(material)), 0) FROM held WHERE master=? AND slave=?",
                (master, slave),
            ).fetchone()[0]
        )

    def holds_relay(self, relay_id: uuid.UUID) -> bool:
        """Whether keys of this relay are held (a repeated leg finds them)."""
        row = self._db.execute(
            "SELECT 1 FROM held WHERE relay_id=? LIMIT 1", (str(relay_id),)
        ).fetchone()
        return row is not None

    def initiator(self, relay_id: uuid.UUID) -> str | None:
        """The initiator node of a relay whose keys are held here, if any."""
        row = self._db.execute(
            "SELECT initiator_node FROM held WHERE relay_id=? LIMIT 1", (str(relay_id),)
        ).fetchone()
        return None if row is None else str(row[0])

    def drop_relay(self, relay_id: uuid.UUID) -> int:
        """Erase the keys held for a relay (voided); returns how many there were."""
        with self._tx():
            return int(
                self._db.execute("DELETE FROM held WHERE relay_id=?", (str(relay_id),)).rowcount
            )

    def expire(self, now_ms: int) -> list[tuple[uuid.UUID, str, tuple[uuid.UUID, ...]]]:
        """Erase the keys held past their time; returns (relay ID, initiator node, key IDs) of
        every relay whose held keys expired."""
        with self._tx():
            rows = self._db.execute(
                "SELECT relay_id, initiator_node, key_id FROM held WHERE expires_ms < ?",
                (now_ms,),
            ).fetchall()
            self._db.execute("DELETE FROM held WHERE expires_ms < ?", (now_ms,))
        grouped: dict[str, tuple[str, list[uuid.UUID]]] = {}
        for rid, node, kid in rows:
            grouped.setdefault(rid, (node, []))[1].append(uuid.UUID(kid))
        return [(uuid.UUID(r), n, tuple(k)) for r, (n, k) in grouped.items()]
