"""A KMS node's persistent store (SQLite): one database, three parts over it.

* :attr:`NodeStore.link_keys` (:mod:`keyserver.kms.linkkeystore`): link-key streams
  (announce, spend, consume, repair);
* :attr:`NodeStore.relays` (:mod:`keyserver.kms.relayjournal`): relay records (begin, ack,
  void, legs, outboxes);
* :attr:`NodeStore.held` (:mod:`keyserver.kms.heldkeys`): keys held for SAEs (issue, take,
  expire).

Every public method of a part is one atomic transaction, so a SIGKILL at any moment leaves either
all or nothing of an operation. The operations that span parts are methods of :class:`NodeStore`,
each one transaction (:meth:`~keyserver.kms.storedb.StoreDb.transaction`, which each part's own
transaction joins): :meth:`NodeStore.begin_relay` (spend link key and record the
relay), :meth:`NodeStore.accept_leg` (consume the hop's link key, assemble the legs, hold the
keys or refuse them, queue the ack), :meth:`NodeStore.void_in` (erase the held keys and partial
legs, tombstone the relay) and :meth:`NodeStore.expire`.

Erasure: the database runs in rollback-journal mode (``journal_mode=TRUNCATE``) with
``secure_delete=ON``: a spent or delivered key is overwritten in place in the database file
within the transaction that spends it, and the journal holding the old page is truncated to
zero bytes at commit, so key material leaves every file at once; ``temp_store=MEMORY``: no
temporary file. (TRUNCATE rather than DELETE: the same atomic commit and the same empty
journal after it, but no file created and unlinked per transaction, which was more than half
of a write transaction's CPU.) Files are created 0600. The directory is
locked (flock) so two processes never share a store, and the database runs in
``locking_mode=EXCLUSIVE``: the one connection holds the file's lock and keeps the journal open
from its first write on (the same commit and truncation; no lock taken and released, no hot
journal looked for and no journal opened per transaction: a one-hop key pair's two
transactions cost about a quarter less CPU). Nothing else may open the file while the node
runs; a test that reads it then opens it ``immutable=1``. ``synchronous`` is ``OFF`` by default
(safe against a process crash, not against power loss; ``FULL`` is safe against both).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import sqlite3
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from keyserver.etsi014.key import Key
from keyserver.kms import directkey
from keyserver.kms.directkey import Binding, DirectRef
from keyserver.kms.heldkeys import HeldKeys, KeysNotFound
from keyserver.kms.linkkeystore import LinkKeyStore, Slice, SliceUnavailable, Spend
from keyserver.kms.relay import AckStatus
from keyserver.kms.relayjournal import FinalHop, FinalOutcome, RelayJournal, RelayOut
from keyserver.kms.storedb import StoreDb, StoreError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS streams (
    link TEXT NOT NULL, owner TEXT NOT NULL,
    end_pos INTEGER NOT NULL, cursor INTEGER NOT NULL, layout BLOB NOT NULL,
    max_cursor_seen INTEGER NOT NULL,
    PRIMARY KEY (link, owner)
);
CREATE TABLE IF NOT EXISTS blocks (
    link TEXT NOT NULL, owner TEXT NOT NULL, start INTEGER NOT NULL,
    key_id TEXT NOT NULL, material BLOB NOT NULL, spent BLOB NOT NULL, unspent INTEGER NOT NULL,
    PRIMARY KEY (link, owner, start)
);
CREATE TABLE IF NOT EXISTS pending (
    link TEXT NOT NULL, seq INTEGER NOT NULL, idx INTEGER NOT NULL,
    key_id TEXT NOT NULL, owner TEXT NOT NULL, material BLOB NOT NULL,
    PRIMARY KEY (link, seq, idx)
);
CREATE TABLE IF NOT EXISTS announce (
    link TEXT PRIMARY KEY, seq INTEGER NOT NULL, got TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS relays_out (
    relay_id TEXT PRIMARY KEY, master TEXT NOT NULL, slave TEXT NOT NULL,
    target_node TEXT NOT NULL, key_ids TEXT NOT NULL, state TEXT NOT NULL,
    deadline_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS void_out (
    relay_id TEXT PRIMARY KEY, target_node TEXT NOT NULL, key_ids TEXT NOT NULL,
    until_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS shares (
    relay_id TEXT NOT NULL, leg INTEGER NOT NULL, legs INTEGER NOT NULL,
    material BLOB NOT NULL, deadline_ms INTEGER NOT NULL,
    PRIMARY KEY (relay_id, leg)
);
CREATE TABLE IF NOT EXISTS held (
    key_id TEXT PRIMARY KEY, relay_id TEXT NOT NULL, master TEXT NOT NULL, slave TEXT NOT NULL,
    initiator_node TEXT NOT NULL, material BLOB NOT NULL, expires_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS held_pair ON held(master, slave);
CREATE TABLE IF NOT EXISTS ack_out (
    relay_id TEXT PRIMARY KEY, initiator_node TEXT NOT NULL, ack_url TEXT NOT NULL,
    key_ids TEXT NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tombstones (
    relay_id TEXT PRIMARY KEY, until_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def _tag_ok(b: Binding, ref: DirectRef, material: bytes) -> bool:
    """A direct key's slice: its first bytes are the MAC key of the tag in its key ID."""
    return directkey.verify(b, ref, material[: directkey.MAC_KEY_BYTES])


class NodeStore:
    """Opens a node's database (schema, pragmas, lock, owner check) and holds its three parts."""

    def __init__(
        self,
        data_dir: Path,
        node_id: str,
        *,
        synchronous: Literal["OFF", "NORMAL", "FULL"] = "OFF",
    ) -> None:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.node_id = node_id
        self._lock_fd = os.open(data_dir / "node.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise StoreError(
                f"{data_dir} is in use by another node process; stop it or use another data_dir"
            ) from None
        path = data_dir / "node.sqlite3"
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(path, 0o600)
        self.path = path
        self._conn = sqlite3.connect(path, isolation_level=None)
        # this connection is the file's only user (the directory lock above): it keeps the
        # file locked and the journal open, instead of taking and dropping the lock, checking
        # for a hot journal and opening the journal in every transaction
        self._conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        self._conn.execute("PRAGMA journal_mode=TRUNCATE")
        self._conn.execute(f"PRAGMA synchronous={synchronous}")
        self._conn.execute("PRAGMA secure_delete=ON")
        self._conn.execute("PRAGMA temp_store=MEMORY")  # no temporary file ever holds key
        self._conn.executescript(_SCHEMA)
        self._storedb = StoreDb(self._conn)
        self.link_keys = LinkKeyStore(self._storedb, node_id)
        self.relays = RelayJournal(self._storedb)
        self.held = HeldKeys(self._storedb, node_id)
        with self.transaction():
            self._conn.execute("INSERT OR IGNORE INTO meta VALUES ('node_id', ?)", (node_id,))
        row = self._conn.execute("SELECT value FROM meta WHERE name='node_id'").fetchone()
        if row[0] != node_id:
            self.close()
            raise StoreError(f"{data_dir} belongs to node {row[0]!r}, not {node_id!r}")

    @property
    def transactions(self) -> int:
        """Write transactions committed (benchmarks and tests count them)."""
        return self._storedb.transactions

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """One atomic transaction around calls to several parts."""
        return self._storedb.transaction()

    def savepoint(self) -> contextlib.AbstractContextManager[None]:
        """Inside a transaction: a step that may fail and be caught; failing undoes only it."""
        return self._storedb.savepoint()

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)

    # -- operations that span parts, each one transaction ------------------------------------
    def begin_relay(self, r: RelayOut, spends: Sequence[Spend]) -> list[Slice]:
        """Spend the relay's link key and record it as pending, atomically."""
        with self.transaction():
            slices = self.link_keys.spend(spends)
            self.relays.begin(r)
            return slices

    def accept_leg(self, incoming: tuple[str, str, int, int] | None, f: FinalHop) -> FinalOutcome:
        """Store one leg's shares (incoming slice consumed in the same transaction); once every
        leg is in, hold the keys for the slave (or refuse them over its quota) and queue the ack
        unless the reply carries it."""
        with self.transaction():
            if incoming is not None:
                self.link_keys.consume(*incoming)
            if self.relays.tombstoned(f.relay_id):
                return FinalOutcome.VOIDED
            if self.held.holds_relay(f.relay_id):
                return FinalOutcome.COMPLETE  # a duplicate of a leg already assembled
            size = len(f.shares[0])
            joined = self.relays.assemble(f)
            if joined is None:
                return FinalOutcome.PARTIAL
            held_bits = self.held.bits(f.master, f.slave)
            if held_bits + 8 * len(joined) > f.quota_bits:
                self.relays.refuse(f.relay_id, f.deadline_ms + 60_000)
                if not f.ack_in_reply:
                    self.relays.queue_ack(
                        f,
                        AckStatus.FAILED,
                        f"quota: pair ({f.master}, {f.slave}) "
                        f"holds {held_bits} bits not yet collected",
                    )
                return FinalOutcome.QUOTA
            keys = [
                Key.of(kid, joined[i * size : (i + 1) * size]) for i, kid in enumerate(f.key_ids)
            ]
            self.held.hold(f.relay_id, f.master, f.slave, f.initiator_node, keys, f.expires_ms)
            if not f.ack_in_reply:
                self.relays.queue_ack(f, AckStatus.RELAYED, "")
            return FinalOutcome.COMPLETE

    def take_keys(
        self,
        master: str,
        slave: str,
        key_ids: Sequence[uuid.UUID],
        direct: dict[uuid.UUID, tuple[Binding, DirectRef]],
    ) -> list[Key]:
        """dec_keys, all or none in one transaction: a held key is removed; a one-hop direct
        key (:mod:`keyserver.kms.directkey`) has its tag checked against the slice's MAC key
        and its slice consumed (MAC key and key erased; bytes already used are refused).
        KeysNotFound names no reason (unknown, delivered, someone else's, forged)."""
        with self.transaction():
            held_ids = [k for k in key_ids if k not in direct]
            held = self.held.take(master, slave, held_ids) if held_ids else []
            by_id = {k.key_id: k for k in held}
            for kid, (b, ref) in direct.items():
                try:
                    got = self.link_keys.consume_if(
                        b.link,
                        b.owner,
                        ref.start,
                        ref.slice_length,
                        functools.partial(_tag_ok, b, ref),
                    )
                except SliceUnavailable:
                    raise KeysNotFound() from None
                if got is None:  # wrong tag: nothing consumed
                    raise KeysNotFound()
                by_id[kid] = Key.of(kid, got[directkey.MAC_KEY_BYTES :])
            return [by_id[k] for k in key_ids]

    def void_in(self, relay_id: uuid.UUID, until_ms: int) -> AckStatus:
        """The initiator voids a relay: drop what is held or partial, and refuse it from now on."""
        with self.transaction():
            n = self.held.drop_relay(relay_id)
            n += self.relays.void_in(relay_id, until_ms)
        return AckStatus.VOIDED if n else AckStatus.KEY_NOT_PRESENT

    def expire(self, now_ms: int) -> list[tuple[uuid.UUID, str, tuple[uuid.UUID, ...]]]:
        """Drop held keys past their time and stale shares/tombstones/pending relays.

        Returns (relay ID, initiator node, key IDs) of every relay whose held keys expired, so
        that the initiator is told (voided at both ends).
        """
        with self.transaction():
            expired = self.held.expire(now_ms)
            self.relays.expire(now_ms)
        return expired

    # -- meta --------------------------------------------------------------------------------
    def get_meta(self, name: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE name=?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, name: str, value: str) -> None:
        with self.transaction():
            self._conn.execute(
                "INSERT INTO meta VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value=excluded.value",
                (name, value),
            )
