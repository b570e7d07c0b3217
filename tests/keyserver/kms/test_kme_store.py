"""The SQLite key store: both sites carve identical keys, nothing twice, state survives."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyserver.kms.sqlitestore import SqliteKeyStore
from keyserver.kms.store import (
    IssueRequest,
    KeysNotAuthorized,
    KeysNotFound,
    LinkDesync,
    Notice,
    Segment,
    StoreError,
)

A, B = "KME-A", "KME-B"


def segments(n: int, size: int = 100, seed: int = 1) -> list[Segment]:
    rng = random.Random(seed)
    return [Segment(i + 1, A if i % 2 == 0 else B, rng.randbytes(size)) for i in range(n)]


def pair(tmp: Path, segs: list[Segment]) -> tuple[SqliteKeyStore, SqliteKeyStore]:
    a = SqliteKeyStore(tmp / "a", A)
    b = SqliteKeyStore(tmp / "b", B)
    a.add_segments(segs, ready=False)
    b.add_segments(segs, ready=True)
    a.mark_ready(segs[-1].seq)
    return a, b


def test_issue_apply_take_gives_the_same_bytes(tmp_path: Path) -> None:
    segs = segments(6)
    a, b = pair(tmp_path, segs)
    stream_a = b"".join(s.material for s in segs if s.owner == A)
    (keys,) = a.issue([IssueRequest("alice", "bob", 3, 70)])
    assert keys is not None
    assert b"".join(k.material for k in keys) == stream_a[:210]  # from the front, across segments
    assert a.available_bytes(A) == 300 - 210
    notices = a.outbox(100)
    assert [n.seq for n in notices] == [1, 2, 3]
    assert b.apply_notices(notices) == 3
    assert b.apply_notices(notices) == 3  # idempotent re-delivery
    assert b.available_bytes(A) == 300 - 210 and b.held_key_count() == 3
    got = b.take_keys("alice", "bob", [k.key_id for k in keys])
    assert got == keys
    with pytest.raises(KeysNotFound):
        b.take_keys("alice", "bob", [keys[0].key_id])
    a.ack_outbox(3)
    assert a.outbox(10) == []


def test_request_that_does_not_fit_consumes_nothing(tmp_path: Path) -> None:
    a, _ = pair(tmp_path, segments(4))
    res = a.issue([IssueRequest("alice", "bob", 1, 150), IssueRequest("alice", "bob", 1, 100)])
    assert res[0] is not None and res[1] is None  # 50 bytes left
    assert a.available_bytes(A) == 50
    assert len(a.outbox(10)) == 1


def test_pending_segments_are_not_issued(tmp_path: Path) -> None:
    a = SqliteKeyStore(tmp_path / "a", A)
    a.add_segments(segments(2), ready=False)
    assert a.available_bytes(A) == 0
    assert a.issue([IssueRequest("alice", "bob", 1, 8)]) == [None]
    assert [s.seq for s in a.pending_segments(10)] == [1, 2]
    a.mark_ready(1)
    assert a.available_bytes(A) == 100 and [s.seq for s in a.pending_segments(10)] == [2]


def test_consumed_segments_are_never_resurrected(tmp_path: Path) -> None:
    segs = segments(2)
    a, b = pair(tmp_path, segs)
    (keys,) = a.issue([IssueRequest("alice", "bob", 1, 100)])
    assert keys is not None
    b.apply_notices(a.outbox(10))
    assert b.stored_bytes(A) == 0
    assert b.add_segments(segs, ready=True) == 2  # re-push after a crash: ignored
    assert b.stored_bytes(A) == 0
    with pytest.raises(StoreError, match="arrived before"):
        b.add_segments([Segment(5, A, b"x")], ready=True)


def test_desynchronised_notice_is_refused_without_change(tmp_path: Path) -> None:
    a, b = pair(tmp_path, segments(4))
    a.issue([IssueRequest("alice", "bob", 1, 10)])
    (n,) = a.outbox(10)
    bad = Notice(n.seq, "issue", n.key_id, A, "alice", "bob", 10, n.start_segment, 5)
    with pytest.raises(LinkDesync):
        b.apply_notices([bad])
    assert b.held_key_count() == 0 and b.stored_bytes(A) == 200
    with pytest.raises(LinkDesync, match="arrived before"):
        b.apply_notices([Notice(7, "void", n.key_id, A, "", "", 0, 0, 0)])
    with pytest.raises(LinkDesync, match="owns"):
        a.apply_notices([Notice(1, "issue", n.key_id, A, "alice", "bob", 10, 1, 0)])
    assert b.apply_notices([n]) == 1


def test_void_notice_removes_the_held_key(tmp_path: Path) -> None:
    a, b = pair(tmp_path, segments(2))
    (keys,) = a.issue([IssueRequest("alice", "bob", 1, 16)])
    assert keys is not None
    a.void([keys[0].key_id])
    assert [n.kind for n in a.outbox(10)] == ["issue", "void"]
    b.apply_notices(a.outbox(10))
    assert b.held_key_count() == 0


def test_take_keys_is_all_or_nothing_and_checks_the_pair(tmp_path: Path) -> None:
    a, b = pair(tmp_path, segments(4))
    (keys,) = a.issue([IssueRequest("alice", "bob", 2, 16)])
    assert keys is not None
    b.apply_notices(a.outbox(10))
    ids = [k.key_id for k in keys]
    with pytest.raises(KeysNotFound):
        b.take_keys("alice", "bob", [*ids, uuid.uuid4()])
    with pytest.raises(KeysNotAuthorized):
        b.take_keys("alice", "dave", ids)
    with pytest.raises(KeysNotAuthorized):
        b.take_keys("carol", "bob", ids)
    assert b.held_key_count() == 2
    assert b.take_keys("alice", "bob", ids[::-1]) == keys[::-1]


def test_state_survives_reopen_and_the_directory_is_locked(tmp_path: Path) -> None:
    a, b = pair(tmp_path, segments(4))
    (keys,) = a.issue([IssueRequest("alice", "bob", 1, 30)])
    with pytest.raises(StoreError, match="in use by another KME"):
        SqliteKeyStore(tmp_path / "a", A)
    a.close()
    with pytest.raises(StoreError, match="belongs to KME"):
        SqliteKeyStore(tmp_path / "a", B)
    a2 = SqliteKeyStore(tmp_path / "a", A)
    assert a2.available_bytes(A) == 170 and a2.available_bytes(B) == 200
    assert len(a2.outbox(10)) == 1 and a2.next_segment_seq() == 5
    (more,) = a2.issue([IssueRequest("alice", "bob", 1, 30)])
    assert more is not None and keys is not None
    b.apply_notices(a2.outbox(10))
    assert b.take_keys("alice", "bob", [keys[0].key_id, more[0].key_id]) == [keys[0], more[0]]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sizes=st.lists(
        st.tuples(st.sampled_from([A, B]), st.integers(1, 4), st.integers(1, 300)), max_size=25
    ),
    seg_size=st.integers(1, 200),
)
def test_both_sites_always_agree(
    tmp_path_factory: pytest.TempPathFactory, sizes: list[tuple[str, int, int]], seg_size: int
) -> None:
    """Random interleavings of issues at A and B: identical keys, each byte used at most once."""
    tmp = tmp_path_factory.mktemp("agree")
    segs = segments(12, seg_size, seed=seg_size)
    a, b = pair(tmp, segs)
    stores = {A: (a, b), B: (b, a)}
    issued = {A: [], B: []}  # type: ignore[var-annotated]
    for owner, number, size in sizes:
        mine, peer = stores[owner]
        (keys,) = mine.issue([IssueRequest("m", "s", number, size)])
        if keys is None:
            assert mine.available_bytes(owner) < number * size
            continue
        peer.apply_notices(mine.outbox(1000))
        mine.ack_outbox(10**9)
        assert peer.take_keys("m", "s", [k.key_id for k in keys]) == keys
        issued[owner].extend(keys)
    for owner in (A, B):
        stream = b"".join(s.material for s in segs if s.owner == owner)
        used = b"".join(k.material for k in issued[owner])
        assert stream.startswith(used)
        assert a.available_bytes(owner) == b.available_bytes(owner) == len(stream) - len(used)
    a.close()
    b.close()
