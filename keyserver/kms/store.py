"""The KME's persistent key store: the interface every backend implements, and its records.

Model (see docs/keyserver.md, "Store design"):

* The link delivers key material in **segments** (<= a few KiB, numbered by a global sequence
  number ``seq`` assigned by the link's source KME). Each segment has an **owner**: the KME whose
  master SAEs may draw keys from it. Both KMEs hold identical copies.
* A KME issues keys (enc_keys) only from segments it owns, always from the front of its stream
  (lowest ``seq``, lowest unused byte), and records an **issue notice** in its outbox. The peer KME
  applies the notices in the same order, so it carves exactly the same bytes, and keeps the key as a
  **held key** until the slave SAE collects it (dec_keys). Notices carry the carve position so a
  desynchronised peer is detected instead of silently serving different bytes.
* Carved bytes leave the pool in the same transaction that records the notice; a held key leaves
  the store in the transaction that serves it. Nothing is ever served twice, across crashes too.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol


class StoreError(Exception):
    """Base class of key store errors."""


class KeysNotFound(StoreError):
    """One or more key IDs are not held by this KME (unknown or already delivered)."""


class KeysNotAuthorized(StoreError):
    """A held key exists but belongs to another SAE pair than the caller's."""


class LinkDesync(StoreError):
    """A peer notice does not match this KME's copy of the key stream: refuse, never guess."""


@dataclass(frozen=True)
class Segment:
    """A piece of link key material shared by both KMEs."""

    seq: int
    owner: str
    material: bytes


@dataclass(frozen=True)
class IssueRequest:
    """Issue `number` keys of `size_bytes` each for the pair (master, slave)."""

    master: str
    slave: str
    number: int
    size_bytes: int


@dataclass(frozen=True)
class IssuedKey:
    key_id: uuid.UUID
    material: bytes


@dataclass(frozen=True)
class Notice:
    """What one KME tells its peer: a key was issued (carve the same bytes) or voided."""

    seq: int
    kind: Literal["issue", "void"]
    key_id: uuid.UUID
    owner: str
    master: str
    slave: str
    size_bytes: int
    start_segment: int
    start_offset: int


class KeyStore(Protocol):
    """Persistent storage of one KME. Every method is one atomic transaction."""

    def close(self) -> None: ...

    # -- link segments ---------------------------------------------------------------------------
    def next_segment_seq(self) -> int:
        """Next free segment number (only the link's source KME allocates them)."""
        ...

    def add_segments(self, segments: Sequence[Segment], *, ready: bool) -> int:
        """Store segments in order; ignore those at or below the highest seq ever stored.

        Returns the highest seq now held.
        """
        ...

    def mark_ready(self, up_to_seq: int) -> None:
        """The peer holds every segment up to `up_to_seq`: they may be issued."""
        ...

    def pending_segments(self, limit: int) -> list[Segment]:
        """Stored but not yet acknowledged by the peer, lowest seq first."""
        ...

    def available_bytes(self, owner: str) -> int:
        """Unissued ready bytes that `owner`'s masters may draw from."""
        ...

    def stored_bytes(self, owner: str) -> int:
        """Unissued bytes of `owner`'s segments, ready or pending."""
        ...

    # -- issuing (master side) -------------------------------------------------------------------
    def issue(self, requests: Sequence[IssueRequest]) -> list[list[IssuedKey] | None]:
        """Carve keys for each request in order, all in one transaction.

        A request that cannot be met in full gets None and consumes nothing.
        """
        ...

    def void(self, key_ids: Sequence[uuid.UUID]) -> None:
        """Queue void notices: these issued keys never reached their master SAE."""
        ...

    def outbox(self, limit: int) -> list[Notice]:
        """Notices not yet acknowledged by the peer, lowest seq first."""
        ...

    def ack_outbox(self, up_to_seq: int) -> None: ...

    # -- applying the peer's notices (slave side) ------------------------------------------------
    def apply_notices(self, notices: Sequence[Notice]) -> int:
        """Apply notices in seq order, skipping those already applied; returns the last applied seq.

        Raises LinkDesync (applying nothing of the failing notice) if the peer's carve position
        does not match ours.
        """
        ...

    def take_keys(self, master: str, slave: str, key_ids: Sequence[uuid.UUID]) -> list[IssuedKey]:
        """Remove and return held keys, all or none.

        Raises KeysNotFound if any ID is unknown, KeysNotAuthorized if any belongs to another pair.
        """
        ...

    def held_key_count(self) -> int: ...

    # -- small persistent values (link statistics) -----------------------------------------------
    def get_meta(self, name: str) -> str | None: ...

    def set_meta(self, name: str, value: str) -> None: ...
