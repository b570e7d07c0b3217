"""Cascade's packed kernels against straightforward references (one byte per bit, numpy).

The permutation of a pass is recomputed here from its tables alone (``q(j) = pi[(l + delta_s)
mod F] S + sigma[s]``), the shuffled strings are plain byte arrays, parities are sums; the whole
protocol is re-run by a plain implementation of the same parallel Cascade (every odd block of
every started pass searched, one level per round) and must take the same rounds, disclose the
same number of parities and correct the same bits.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyserver.qkd import cascade as c


def _positions(t: c.PassTables, p: int) -> np.ndarray:
    """q(j) for every original position j (reference form of the permutation)."""
    j = np.arange(t.n, dtype=np.int64)
    s = j // t.f
    loc = j - s * t.f
    rows = t.pi[p][(loc + t.delta[p][s]) % t.f].astype(np.int64)
    return rows * t.segs + t.sigma[p][s]


def _reference_shuffled(bits: np.ndarray, t: c.PassTables, p: int) -> np.ndarray:
    out = np.zeros(t.padded, dtype=np.uint8)
    out[_positions(t, p)] = bits
    return out


def _prefix(a: np.ndarray) -> np.ndarray:
    """Parities of a[:i] for i = 0..len(a)."""
    return np.concatenate((np.zeros(1, np.int64), np.cumsum(a, dtype=np.int64) & 1))


def _unpack_rows(words: np.ndarray, segs: int) -> np.ndarray:
    cols = np.arange(segs, dtype=np.uint64)
    return ((words[:, None] >> cols[None, :]) & np.uint64(1)).astype(np.uint8).reshape(-1)


SIZES = (
    1,
    2,
    17,
    1000,
    c.SEGMENT - 1,
    c.SEGMENT,
    c.SEGMENT + 1,
    3 * c.SEGMENT + 1929,
    5 * c.SEGMENT - 3,
)


@pytest.mark.parametrize("n", SIZES)
def test_layout_and_tables_form_a_permutation(n: int) -> None:
    segs, f = c.layout(n)
    assert 1 <= segs <= 64 and f <= c.SEGMENT and 0 <= segs * f - n < segs
    t = c.pass_tables(bytes(range(32)), range(3), n)
    for p in range(3):
        q = _positions(t, p)
        assert q.min() >= 0 and q.max() < t.padded
        hits = np.bincount(q, minlength=t.padded)
        assert hits.max() == 1
        for j in np.unique(np.linspace(0, n - 1, 50).astype(np.int64)):
            row, col = c._fwd(t.pi[p], t.sigma[p], t.delta[p], t.f, int(j))
            assert row * t.segs + col == q[j]
            assert c._inv(t.pi_inv[p], t.sigma_inv[p], t.delta[p], t.f, t.segs, int(q[j])) == j
        virtual = np.flatnonzero(hits == 0)
        assert virtual.shape[0] == t.padded - n
        for v in virtual:  # the padding: positions no bit goes to map back beyond the string
            assert c._inv(t.pi_inv[p], t.sigma_inv[p], t.delta[p], t.f, t.segs, int(v)) >= n


def test_layout_refuses_more_than_a_group() -> None:
    with pytest.raises(ValueError):
        c.layout(c.MAX_BITS + 1)
    assert c.layout(c.MAX_BITS) == (64, c.SEGMENT)


@pytest.mark.parametrize("n", SIZES)
def test_packed_pass_and_parities_match_the_reference(n: int) -> None:
    rng = np.random.default_rng(n)
    bits = rng.integers(0, 2, n, dtype=np.uint8)
    t = c.pass_tables(rng.bytes(32), range(2), n)
    for p in range(2):
        ref = _reference_shuffled(bits, t, p)
        assert np.array_equal(c.shuffled(bits, t, p), ref)
        words = c.packed_pass(bits, t, p)
        assert np.array_equal(_unpack_rows(words, t.segs), ref)
        work = words[None, :].copy()
        rowpre = np.zeros((1, t.f + 1), dtype=np.uint8)
        c._row_prefix(work[0], rowpre[0])
        prefix = _prefix(ref)
        for k in sorted({2, 3, 18, 64, 65, max(2, n // 2)}):
            top = c._top_parities(work, rowpre, 0, t.segs, t.padded, k)
            bounds = np.minimum(np.arange(0, top.shape[0] + 1) * k, t.padded)
            assert np.array_equal(top, prefix[bounds[1:]] ^ prefix[bounds[:-1]])
        lo = rng.integers(0, t.padded, 300)
        hi = np.minimum(t.padded, lo + 1 + rng.integers(0, 5 * t.segs + 3, 300))
        want = prefix[hi] ^ prefix[lo]
        got = c._answer(work, rowpre, t.segs, np.zeros(300, np.uint8), lo, hi)
        assert np.array_equal(got, want)
        for a, b in zip(lo.tolist(), hi.tolist(), strict=True):
            assert c._range_parity(work, 0, t.segs, a, b) == prefix[b] ^ prefix[a]


def reference_cascade(
    alice: np.ndarray, bob: np.ndarray, seed: bytes, sizes: list[int]
) -> tuple[np.ndarray, int, int, int]:
    """The same parallel Cascade, written plainly: (corrected, rounds, parities, flips).

    Byte strings per pass; after every round, every finished search flips its bit if it still
    differs, searches whose range became even are dropped, and every odd block of a started pass
    that has no search gets one (the whole block)."""
    n = alice.shape[0]
    sizes = [max(2, min(k, max(n, 2))) for k in sizes]
    t = c.pass_tables(seed, range(len(sizes)), n)
    big_n = t.padded
    pos = [_positions(t, p) for p in range(len(sizes))]
    a_str = [_reference_shuffled(alice, t, p) for p in range(len(sizes))]
    b_str = [_reference_shuffled(bob, t, p) for p in range(len(sizes))]
    back = []
    for p in range(len(sizes)):
        inv = np.full(big_n, -1, dtype=np.int64)
        inv[pos[p]] = np.arange(n)
        back.append(inv)
    cur = bob.copy()
    rounds = leaked = flips = 0
    searches: dict[tuple[int, int], list[int]] = {}  # (pass, block) -> [lo, hi]

    def odd(p: int, lo: int, hi: int) -> bool:
        return bool((int(a_str[p][lo:hi].sum()) ^ int(b_str[p][lo:hi].sum())) & 1)

    def settle(started: int) -> None:
        nonlocal flips
        while True:
            for key, r in [(k, r) for k, r in searches.items() if r[1] - r[0] == 1]:
                del searches[key]
                if odd(key[0], r[0], r[1]):
                    j = int(back[key[0]][r[0]])
                    assert j >= 0
                    cur[j] ^= 1
                    for q in range(len(sizes)):
                        b_str[q][pos[q][j]] ^= 1
                    flips += 1
            for key in [k for k, r in searches.items() if not odd(k[0], *r)]:
                del searches[key]
            for p in range(started):
                k = sizes[p]
                starts = np.arange(0, big_n, k)
                diff = (np.add.reduceat(a_str[p] ^ b_str[p], starts) & 1).astype(bool)
                for b in np.flatnonzero(diff):
                    if (p, int(b)) not in searches:
                        searches[(p, int(b))] = [int(b) * k, min(big_n, int(b) * k + k)]
            if not any(r[1] - r[0] == 1 for r in searches.values()):
                return

    for p in range(len(sizes)):
        rounds += 1
        leaked += (big_n + sizes[p] - 1) // sizes[p]
        settle(p + 1)
        while searches:
            rounds += 1
            leaked += len(searches)
            for key, r in searches.items():
                mid = (r[0] + r[1]) // 2
                if odd(key[0], r[0], mid):
                    r[1] = mid
                else:
                    r[0] = mid
            settle(p + 1)
    return cur, rounds, leaked, flips


def _run_packed(
    alice: np.ndarray, bob: np.ndarray, seed: bytes, sizes: list[int]
) -> tuple[np.ndarray, int, int, int]:
    a = c.CascadeAlice(alice, seed, 64 * max(alice.shape[0], 1))
    b = c.CascadeBob(bob, seed, sizes)
    req = b.first_request()
    while req is not None:
        ans = (
            a.start_pass(req.start_block)
            if req.start_block
            else a.answer(req.passes, req.lo, req.hi)
        )
        req = b.on_answer(ans)
    assert a.leaked_bits == b.leaked_bits
    return b.corrected_bits(), b.rounds, b.leaked_bits, b.corrected


@settings(max_examples=12, deadline=None)
@given(
    qber=st.floats(0.005, 0.12),
    seed=st.integers(0, 2**32 - 1),
    n=st.sampled_from([2, 5, 64, 777, 5000, c.SEGMENT + 3, 2 * c.SEGMENT + 999]),
)
def test_cascade_matches_the_reference_implementation(qber: float, seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    alice = rng.integers(0, 2, n, dtype=np.uint8)
    bob = alice ^ (rng.random(n) < qber).astype(np.uint8)
    key = rng.bytes(32)
    sizes = c.schedule(qber, n)
    got = _run_packed(alice, bob, key, sizes)
    want = reference_cascade(alice, bob, key, sizes)
    assert np.array_equal(got[0], want[0])
    assert got[1:] == want[1:]


def test_a_search_ending_on_padding_is_refused() -> None:
    """A (malicious or broken) answer that leads Bob's search onto a virtual bit aborts."""
    n = 2 * c.SEGMENT + 5  # padded beyond n
    rng = np.random.default_rng(3)
    bits = rng.integers(0, 2, n, dtype=np.uint8)
    t = c.pass_tables(bytes(32), range(1), n)
    virtual = np.flatnonzero(np.bincount(_positions(t, 0), minlength=t.padded) == 0)
    assert virtual.size
    b = c.CascadeBob(bits, bytes(32), [t.padded])
    req = b.first_request()
    k = req.start_block
    nb = b.expected_answer_bits()
    # claim the block holding a virtual bit is odd, then steer every level towards it
    target = int(virtual[0])
    top = np.zeros(nb, dtype=np.uint8)
    own = c._top_parities(
        c.packed_pass(bits, t, 0)[None, :],
        _row_prefix_of(c.packed_pass(bits, t, 0)),
        0,
        t.segs,
        t.padded,
        k,
    )
    top[:] = own
    top[target // k] ^= 1
    nxt = b.on_answer(top)
    with pytest.raises(c.CascadeError, match="outside the string"):
        while nxt is not None:
            lo, mid = nxt.lo, nxt.hi
            bob_left = np.array(
                [_ref_parity(bits, t, int(x), int(y)) for x, y in zip(lo, mid, strict=True)],
                dtype=np.uint8,
            )
            steer = np.where(target < mid, bob_left ^ 1, bob_left).astype(np.uint8)
            nxt = b.on_answer(steer)


def _row_prefix_of(words: np.ndarray) -> np.ndarray:
    out = np.zeros((1, words.shape[0] + 1), dtype=np.uint8)
    c._row_prefix(words, out[0])
    return out


def _ref_parity(bits: np.ndarray, t: c.PassTables, lo: int, hi: int) -> int:
    return int(_reference_shuffled(bits, t, 0)[lo:hi].sum() & 1)
