"""Link-key streams: how two neighbour KMS nodes share the key of their QKD link (sans-I/O).

Both nodes of a link hold the same link key (each fetched it from its own QKD module over ETSI
014; only key IDs cross between the nodes). The key is split into two **streams**, one per
**owner**: the owner of a stream is the node that may *spend* it (to encrypt and authenticate
what it sends to the other node); the other node keeps its copy to decrypt what arrives.

* **Drawing** (the transmitter-side node): enc_keys at its module, then an **announcement**
  ``(seq, [(key_ID, owner), ...])`` to the receiver-side node, which fetches those IDs with
  dec_keys at its module and answers which it got. Both append the keys it got, in
  announcement order, to the owner's stream at the stream's end position (so positions are
  assigned by the same rule on both sides, with no hole), and fold each block into the stream's
  **layout hash**. The transmitter gives each new key to the stream that holds less.
* **Spending** (the owner): a slice ``[start, start+length)`` from its cursor, in order; the
  cursor is persisted in the same transaction. The other node consumes exactly the referenced
  slice when the message that uses it arrives (out of order is fine) and refuses any byte it
  already consumed (that is what makes a replayed message fail).
* **Sync** (both ways, periodically): ``(announce seq, end, layout hash, owner cursor)`` per
  stream. The receiver may be exactly one announcement ahead (in flight); any other difference
  of announcement sequence, different end/hash at equal sequence, or an owner cursor that went
  backwards is a **desync** (e.g. a store restored from an old copy): both sides then erase the
  stream and move its end and cursor to the same new position (and continue from the same
  announcement number), so no byte is ever used twice and the link goes on. Until a node has
  seen one consistent sync from its neighbour after it started, it spends nothing on that link.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True)
class StreamView:
    """One side's view of one stream of a link (what a sync message carries)."""

    owner: str
    end: int  # next position to assign
    layout_hash: bytes  # hash chain over (start, length, key_ID) of every block ever appended
    cursor: int  # the owner's spend cursor (as the owner says, or as last reported to us)


@dataclass(frozen=True)
class SyncState:
    """One side's sync message for one link."""

    link: str
    sender: str
    announce_seq: int  # tx side: last confirmed announcement; rx side: last applied
    streams: tuple[StreamView, ...]


class SyncVerdict(Enum):
    CONSISTENT = "consistent"
    IN_FLIGHT = "in_flight"  # an announcement is between the two: compare later
    DESYNC = "desync"


@dataclass(frozen=True)
class SyncResult:
    verdict: SyncVerdict
    repair: tuple[tuple[str, int], ...] = ()  # (owner, new end) for every stream to reset
    reason: str = ""
    announce_seq: int = 0  # after a repair both sides continue from this announcement


GENESIS = hashlib.sha256(b"qphone link stream v1").digest()


def extend_layout(prev: bytes, start: int, length: int, key_id: uuid.UUID) -> bytes:
    """The layout hash after appending one block."""
    h = hashlib.sha256(prev)
    h.update(start.to_bytes(8, "big") + length.to_bytes(4, "big") + key_id.bytes)
    return h.digest()


def repaired_layout(new_end: int) -> bytes:
    """The layout hash both sides adopt after a repair that reset the stream to `new_end`."""
    return hashlib.sha256(b"qphone link stream repaired" + new_end.to_bytes(8, "big")).digest()


def assign_owners(count: int, stocks: dict[str, int], block_bytes: int) -> list[str]:
    """Give each of `count` new blocks to the stream that holds less (ties: sorted owner ID)."""
    s = dict(stocks)
    out = []
    for _ in range(count):
        owner = min(sorted(s), key=lambda o: s[o])
        s[owner] += block_bytes
        out.append(owner)
    return out


def compare(
    mine: SyncState, theirs: SyncState, max_cursor_seen: dict[str, int], transmitter: str
) -> SyncResult:
    """Compare my view of a link with my neighbour's.

    `transmitter` is the link's transmitter-side node (it announces; the receiver applies an
    announcement before the transmitter confirms it, so the receiver may be exactly one ahead).
    `max_cursor_seen` maps the neighbour (as owner) to the highest cursor it ever reported for
    its own stream; a lower one now means its store went back in time.
    """
    if mine.link != theirs.link:
        raise ValueError("sync states of different links")
    by_owner = {s.owner: s for s in mine.streams}
    other = {s.owner: s for s in theirs.streams}
    owners = sorted(set(by_owner) | set(other))
    seq = max(mine.announce_seq, theirs.announce_seq)

    def reset(names: list[str], reason: str) -> SyncResult:
        new = tuple(
            (
                o,
                max(
                    _end(by_owner, o),
                    _end(other, o),
                    _cursor(by_owner, o),
                    _cursor(other, o),
                    max_cursor_seen.get(o, 0),
                ),
            )
            for o in names
        )
        return SyncResult(SyncVerdict.DESYNC, new, reason, seq)

    if set(by_owner) != set(other):
        return reset(owners, "streams differ")
    back = [
        o for o, s in other.items() if o == theirs.sender and s.cursor < max_cursor_seen.get(o, 0)
    ]
    if back:
        return reset(owners, f"{back[0]}: cursor went back")
    tx, rx = (mine, theirs) if mine.sender == transmitter else (theirs, mine)
    if rx.announce_seq == tx.announce_seq + 1:
        return SyncResult(SyncVerdict.IN_FLIGHT)
    if rx.announce_seq != tx.announce_seq:
        return reset(
            owners,
            f"announcement sequence: transmitter at {tx.announce_seq}, "
            f"receiver at {rx.announce_seq}",
        )
    bad = [
        o
        for o in owners
        if by_owner[o].end != other[o].end or by_owner[o].layout_hash != other[o].layout_hash
    ]
    if not bad:
        return SyncResult(SyncVerdict.CONSISTENT)
    return reset(
        bad,
        ", ".join(
            f"{o}: end/layout differ (mine end {by_owner[o].end}, theirs end {other[o].end})"
            for o in bad
        ),
    )


def _end(views: dict[str, StreamView], owner: str) -> int:
    return views[owner].end if owner in views else 0


def _cursor(views: dict[str, StreamView], owner: str) -> int:
    return views[owner].cursor if owner in views else 0


def merge_intervals(intervals: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Union of half-open intervals, sorted and merged."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out
