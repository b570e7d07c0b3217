"""Cascade information reconciliation (Brassard-Salvail 1993), parallel and interactive.

Bob drives; Alice only answers parity questions about her own string, and every parity bit she
sends is counted as leaked (``leaked_bits``), which is what the finite-key bound subtracts. Bob's
questions and his reports reveal where errors are (functions of the error pattern), as in the
usual accounting of Cascade (Martinez-Mateo, Pacher, Peev, Ciurana, Martin, "Demystifying the
information reconciliation protocol Cascade", QIC 15 (2015)); docs/bb84.md discusses this.

Passes: pass ``p`` shuffles the string with a permutation derived from a public random seed and
cuts it into top-level blocks of ``k_p`` bits. Alice sends the parities of all top-level blocks of
a pass in one answer; for every block whose parity differs from Bob's, Bob runs a binary search
(BINARY): he asks for the parity of the left half (the right half's parity follows from the
block's), descends into the half whose parities differ and, at a single bit, flips it. A flip
changes the parity of the block holding that bit in every earlier pass; those blocks (now odd) are
searched again (the cascade). All searches of all passes advance together, one round trip per
level, so a block needs about ``passes * log2(k)`` round trips.

Permutations are computed from small tables (:func:`pass_table`): a shuffle of the rows and
columns of the string laid out as a SEGMENT x S array, with a random offset per column, so that
every pair of positions is separated as by a uniform shuffle, for blocks smaller and larger than a
segment. (Shuffling only *within* segments, as an earlier version did, keeps two errors of one
segment together in every pass with blocks above the segment size: the large final passes then
never find such a pair.) The block sizes come from the QBER expected for the
block (the previous block's exact QBER): :func:`schedule`.

The heavy loops are numba kernels (parity of ranges, flips in every pass, the search updates).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from numba import njit

U8Array = npt.NDArray[np.uint8]
I32Array = npt.NDArray[np.int32]
I64Array = npt.NDArray[np.int64]
U64Array = npt.NDArray[np.uint64]

SEGMENT = 1 << 16
MAX_BITS = 64 * SEGMENT  # a string of at most 64 segments: a row of the pass array is one word
MAX_PASSES = 16


class CascadeError(ValueError):
    """A Cascade message that does not fit the protocol state (the block is aborted)."""


def schedule(qber: float, n: int) -> list[int]:
    """Top-level block sizes per pass for ``n`` bits at the expected ``qber``.

    First pass ``k1 ~ 0.6 / qber``, then blocks six times larger per pass (measured to leak
    ~1.08 n H2(QBER) at 2-3.5 %, against 1.16-1.19 for the classic ``0.73 / qber`` and doubling),
    then three passes with blocks of ``n / 2`` that find the rare residual errors cheaply (an odd
    number always, a pair with probability 1/2 each; verification catches the rest).
    """
    q = min(max(qber, 1e-4), 0.25)
    k1 = max(4, round(0.6 / q))
    half = max(2, n // 2)
    sizes = [min(k, half) for k in (k1, 6 * k1, 36 * k1, 216 * k1)]
    return sizes + [half] * 3


# -- permutations -------------------------------------------------------------------------------
#
# A pass's permutation, from small tables: the string of n bits is cut into S = ceil(n / SEGMENT)
# segments of F = ceil(n / S) bits (the last one padded with S F - n < S virtual zero bits, known
# to both sides); bit l of segment s goes to row pi((l + delta_s) mod F) and column sigma(s) of
# an F x S array read row by row: position q = row S + col of the shuffled string (length S F).
# pi, sigma are uniform random permutations, delta_s uniform offsets, all from the public seed.
# Bits of one segment land in distinct random rows (pi), bits of different segments in
# independent random rows (their own offsets), so every pair of positions is separated as by a
# uniform shuffle, also by blocks larger than a segment. S <= 64, so a row is one 64-bit word:
# both sides hold each pass's string bit-packed by rows (``words[row]`` bit ``col``), built by
# contiguous runs and F word gathers (:func:`_pack`) rather than by n random bit moves.


@njit(cache=True, nogil=True)
def _fisher_yates(words: npt.NDArray[np.uint32], m: int) -> I32Array:
    perm = np.arange(m, dtype=np.int32)
    for i in range(m - 1, 0, -1):
        j = (np.uint64(words[m - 1 - i]) * np.uint64(i + 1)) >> np.uint64(32)
        t = perm[i]
        perm[i] = perm[j]
        perm[j] = t
    return perm


def _words(seed: bytes, label: bytes, count: int) -> npt.NDArray[np.uint32]:
    key = hashlib.sha256(b"qphone-cascade\0" + seed + b"\0" + label).digest()
    enc = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
    return np.frombuffer(enc.update(bytes(4 * max(count, 1))), dtype=np.uint32)


def layout(n: int) -> tuple[int, int]:
    """(S, F) for an n-bit string: S segments (columns) of F bits (rows); S F - n < S."""
    if not 0 <= n <= MAX_BITS:
        raise ValueError(f"Cascade strings hold at most {MAX_BITS} bits")
    segs = max(1, -(-n // SEGMENT))
    f = max(1, -(-n // segs))
    return segs, f


@dataclass(frozen=True)
class PassTables:
    """The permutations of passes 0..P-1 for an n-bit string (arrays indexed [pass, ...])."""

    n: int
    segs: int
    f: int
    pi: I32Array  # (P, F): row of (l + delta_s) mod F
    pi_inv: I32Array  # (P, F)
    sigma: I32Array  # (P, S): column of segment s
    sigma_inv: I32Array  # (P, S)
    delta: I32Array  # (P, S): offset of segment s

    @property
    def padded(self) -> int:
        """Length of the shuffled string (the last segment's virtual zeros included)."""
        return self.segs * self.f


def pass_tables(seed: bytes, passes: range, n: int) -> PassTables:
    segs, f = layout(n)
    count = len(passes)
    pi = np.empty((count, f), dtype=np.int32)
    pi_inv = np.empty((count, f), dtype=np.int32)
    sigma = np.empty((count, segs), dtype=np.int32)
    sigma_inv = np.empty((count, segs), dtype=np.int32)
    delta = np.zeros((count, segs), dtype=np.int32)
    for i, p in enumerate(passes):
        pi[i] = _fisher_yates(_words(seed, b"rows%d" % p, f), f)
        pi_inv[i, pi[i]] = np.arange(f, dtype=np.int32)
        sigma[i] = _fisher_yates(_words(seed, b"cols%d" % p, segs), segs)
        sigma_inv[i, sigma[i]] = np.arange(segs, dtype=np.int32)
        if segs > 1:
            delta[i] = (_words(seed, b"shift%d" % p, segs)[:segs] % np.uint32(f)).astype(np.int32)
    return PassTables(n, segs, f, pi, pi_inv, sigma, sigma_inv, delta)


@njit(cache=True, nogil=True)
def _fwd(t_pi: I32Array, t_sigma: I32Array, t_delta: I32Array, f: int, j: int) -> tuple[int, int]:
    """(row, column) of original position j."""
    s = j // f
    t = j - s * f + t_delta[s]
    if t >= f:
        t -= f
    return int(t_pi[t]), int(t_sigma[s])


@njit(cache=True, nogil=True)
def _inv(
    t_pi_inv: I32Array, t_sigma_inv: I32Array, t_delta: I32Array, f: int, segs: int, q: int
) -> int:
    """Original position of shuffled position q (>= n for a virtual bit)."""
    row = q // segs
    c = q - row * segs
    s = t_sigma_inv[c]
    loc = t_pi_inv[row] - t_delta[s]
    if loc < 0:
        loc += f
    return int(s * f + loc)


@njit(cache=True, nogil=True)
def _pack(
    bits: U8Array,
    f: int,
    segs: int,
    pi_inv: I32Array,
    sigma_inv: I32Array,
    delta: I32Array,
    out: U64Array,
) -> None:
    """``out[row]`` bit ``col`` = the bit at (row, col) of the pass's array (rows of S bits).

    Two steps, both cache-friendly: ``m[t]`` bit ``col`` = bit ``(t - delta_s) mod F`` of the
    segment s in that column (contiguous runs, one column after the other), then the rows are
    ``out[row] = m[pi^-1(row)]`` (F word gathers instead of n bit gathers)."""
    n = bits.shape[0]
    m = np.zeros(f, dtype=np.uint64)
    for c in range(segs):
        s = sigma_inv[c]
        base = s * f
        d = delta[s]
        cc = np.uint64(c)
        length = min(f, n - base)
        for loc in range(min(length, f - d)):  # t = loc + d
            m[loc + d] |= np.uint64(bits[base + loc]) << cc
        for loc in range(f - d, length):  # t = loc + d - F
            m[loc + d - f] |= np.uint64(bits[base + loc]) << cc
    for row in range(f):
        out[row] = m[pi_inv[row]]


@njit(cache=True, nogil=True)
def _parity64(x: np.uint64) -> np.uint8:
    y = np.uint64(x)
    y ^= y >> np.uint64(32)
    y ^= y >> np.uint64(16)
    y ^= y >> np.uint64(8)
    y ^= y >> np.uint64(4)
    y ^= y >> np.uint64(2)
    y ^= y >> np.uint64(1)
    return np.uint8(y & np.uint64(1))


@njit(cache=True, nogil=True)
def _row_prefix(words: U64Array, out: U8Array) -> None:
    """``out[r]`` = parity of rows 0..r-1."""
    acc = np.uint8(0)
    out[0] = 0
    for r in range(words.shape[0]):
        acc ^= _parity64(words[r])
        out[r + 1] = acc


@njit(cache=True, nogil=True)
def _low(c: int) -> np.uint64:
    """The word of the c < 64 lowest bits."""
    return (np.uint64(1) << np.uint64(c)) - np.uint64(1)


@njit(cache=True, nogil=True)
def _prefix_at(words: U64Array, rowpre: U8Array, p: int, segs: int, q: int) -> np.uint8:
    """Parity of positions [0, q) of pass p's shuffled string (2-D arrays indexed by pass: no
    views in the hot loops, whose reference counting would cost more than the lookup)."""
    r = q // segs
    c = q - r * segs
    if c == 0:
        return np.uint8(rowpre[p, r])
    return np.uint8(rowpre[p, r] ^ _parity64(words[p, r] & _low(c)))


@njit(cache=True, nogil=True)
def _range_parity(words: U64Array, p: int, segs: int, lo: int, hi: int) -> np.uint8:
    """Parity of positions [lo, hi) of pass p's packed string."""
    r0 = lo // segs
    c0 = lo - r0 * segs
    r1 = hi // segs
    c1 = hi - r1 * segs
    if r0 == r1:
        return _parity64(words[p, r0] & (_low(c1) ^ _low(c0)))
    x = words[p, r0] & ~_low(c0)
    for r in range(r0 + 1, r1):
        x ^= words[p, r]
    if c1 > 0:
        x ^= words[p, r1] & _low(c1)
    return _parity64(x)


@njit(cache=True, nogil=True)
def _top_parities(
    words: U64Array, rowpre: U8Array, p: int, segs: int, padded: int, k: int
) -> U8Array:
    nb = (padded + k - 1) // k
    out = np.empty(nb, dtype=np.uint8)
    prev = np.uint8(0)
    for b in range(nb):
        cur = _prefix_at(words, rowpre, p, segs, min(padded, (b + 1) * k))
        out[b] = prev ^ cur
        prev = cur
    return out


@njit(cache=True, nogil=True)
def _answer(
    words: U64Array, rowpre: U8Array, segs: int, passes: U8Array, lo: I64Array, hi: I64Array
) -> U8Array:
    m = passes.shape[0]
    out = np.empty(m, dtype=np.uint8)
    for i in range(m):
        p = passes[i]
        out[i] = _prefix_at(words, rowpre, p, segs, hi[i]) ^ _prefix_at(
            words, rowpre, p, segs, lo[i]
        )
    return out


def shuffled(bits: U8Array, tables: PassTables, p: int) -> U8Array:
    """Reference form of pass ``p``'s shuffled string (one byte per bit, length S F): the packed
    kernels are tested against this."""
    out = np.zeros(tables.padded, dtype=np.uint8)
    for j in range(bits.shape[0]):
        row, col = _fwd(tables.pi[p], tables.sigma[p], tables.delta[p], tables.f, j)
        out[row * tables.segs + col] = bits[j]
    return out


def packed_pass(bits: U8Array, tables: PassTables, p: int) -> U64Array:
    """Pass ``p``'s shuffled string, packed by rows (``words[row]`` bit ``col``)."""
    out = np.empty(tables.f, dtype=np.uint64)
    _pack(bits, tables.f, tables.segs, tables.pi_inv[p], tables.sigma_inv[p], tables.delta[p], out)
    return out


# -- Alice ---------------------------------------------------------------------------------------


class CascadeAlice:
    """Alice's side: answers parity requests on her (fixed) string; counts what she discloses."""

    def __init__(self, bits: U8Array, seed: bytes, max_leak: int) -> None:
        self.n = int(bits.shape[0])
        self._bits = np.ascontiguousarray(bits, dtype=np.uint8)
        self._seed = seed
        self._segs, self._f = layout(self.n)
        self._padded = self._segs * self._f
        # untouched rows of these cost no memory (calloc): only started passes are filled
        self._words = np.zeros((MAX_PASSES, self._f), dtype=np.uint64)
        self._rowpre = np.zeros((MAX_PASSES, self._f + 1), dtype=np.uint8)
        self._blocks: list[int] = []
        self.max_leak = max_leak
        self.leaked_bits = 0

    @property
    def passes(self) -> int:
        return len(self._blocks)

    def start_pass(self, block: int) -> U8Array:
        """Top-level parities of the next pass with blocks of ``block`` bits."""
        p = len(self._blocks)
        if p >= MAX_PASSES:
            raise CascadeError(f"more than {MAX_PASSES} Cascade passes")
        if not 2 <= block <= max(self.n, 2):
            raise CascadeError("Cascade block size out of range")
        t = pass_tables(self._seed, range(p, p + 1), self.n)
        _pack(self._bits, t.f, t.segs, t.pi_inv[0], t.sigma_inv[0], t.delta[0], self._words[p])
        _row_prefix(self._words[p], self._rowpre[p])
        self._blocks.append(block)
        out = _top_parities(self._words, self._rowpre, p, self._segs, self._padded, block)
        return self._disclose(out)

    def answer(self, passes: U8Array, lo: I64Array, hi: I64Array) -> U8Array:
        """Parities of Alice's shuffled string on ``[lo, hi)`` in the given passes."""
        if not (passes.shape == lo.shape == hi.shape):
            raise CascadeError("parity request arrays differ in length")
        if passes.shape[0] == 0:
            return np.zeros(0, dtype=np.uint8)
        if int(passes.max()) >= len(self._blocks):
            raise CascadeError("parity request names a pass that has not started")
        if int(lo.min()) < 0 or int(hi.max()) > self._padded or bool(np.any(lo >= hi)):
            raise CascadeError("parity request range out of bounds")
        out = _answer(
            self._words,
            self._rowpre,
            self._segs,
            passes.astype(np.uint8, copy=False),
            lo.astype(np.int64, copy=False),
            hi.astype(np.int64, copy=False),
        )
        return self._disclose(out)

    def _disclose(self, parities: U8Array) -> U8Array:
        self.leaked_bits += int(parities.shape[0])
        if self.leaked_bits > self.max_leak:
            raise CascadeError("Cascade disclosed more than the block can afford")
        return parities


# -- Bob -----------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _descend(
    work: U64Array,
    segs: int,
    s_pass: I32Array,
    s_lo: I64Array,
    s_hi: I64Array,
    s_apar: U8Array,
    s_bpar: U8Array,
    a_left: U8Array,
) -> None:
    """One level of every binary search: keep the half whose parities differ."""
    for i in range(s_pass.shape[0]):
        p = s_pass[i]
        lo = s_lo[i]
        hi = s_hi[i]
        mid = (lo + hi) // 2
        b_left = _range_parity(work, p, segs, lo, mid)
        if a_left[i] != b_left:
            s_hi[i] = mid
            s_apar[i] = a_left[i]
            s_bpar[i] = b_left
        else:
            s_lo[i] = mid
            s_apar[i] ^= a_left[i]
            s_bpar[i] ^= b_left


@njit(cache=True, nogil=True)
def _begin(
    work: U64Array,
    segs: int,
    padded: int,
    k: int,
    p: int,
    off: int,
    top: U8Array,
    diff: U8Array,
    search_of: I32Array,
    alice_top: U8Array,
    base: int,
) -> tuple[I32Array, I64Array, I64Array, U8Array, U8Array]:
    """Pass ``p`` starts (``work[p]`` holds Bob's string in its order): searches in odd blocks."""
    rowpre = np.empty((p + 1, work.shape[1] + 1), dtype=np.uint8)
    _row_prefix(work[p], rowpre[p])
    mine = _top_parities(work, rowpre, p, segs, padded, k)
    nb = top.shape[0]
    odd = 0
    for b in range(nb):
        alice_top[off + b] = top[b]
        d = top[b] ^ mine[b]
        diff[off + b] = d
        odd += d
    n_p = np.empty(odd, dtype=np.int32)
    n_lo = np.empty(odd, dtype=np.int64)
    n_hi = np.empty(odd, dtype=np.int64)
    n_a = np.empty(odd, dtype=np.uint8)
    n_b = np.empty(odd, dtype=np.uint8)
    c = 0
    for b in range(nb):
        if diff[off + b] == 1:
            n_p[c] = p
            n_lo[c] = b * k
            n_hi[c] = min(padded, b * k + k)
            n_a[c] = top[b]
            n_b[c] = top[b] ^ 1
            search_of[off + b] = base + c
            c += 1
    return n_p, n_lo, n_hi, n_a, n_b


@njit(cache=True, nogil=True)
def _settle(
    work: U64Array,
    cur: U8Array,
    diff: U8Array,
    search_of: I32Array,
    alice_top: U8Array,
    block_off: I64Array,
    ks: I64Array,
    started: int,
    pi: I32Array,
    pi_inv: I32Array,
    sigma: I32Array,
    sigma_inv: I32Array,
    delta: I32Array,
    f: int,
    segs: int,
    padded: int,
    s_pass: I32Array,
    s_lo: I64Array,
    s_hi: I64Array,
    s_apar: U8Array,
    s_bpar: U8Array,
) -> tuple[I32Array, I64Array, I64Array, U8Array, U8Array, int, int]:
    """Flip the bits found, drop searches whose range became even, start searches in blocks that
    became odd. Returns the searches, the flips, and -1 if a search ended on a virtual bit.

    ``work`` is (passes, F): Bob's string in each pass's order, packed by rows; ``diff`` (Alice's
    top-level parity xor Bob's), ``search_of`` (the search in a block, -1 none) and
    ``alice_top`` are flat over all passes' top-level blocks (pass p starts at block_off[p]);
    ``s_bpar`` is Bob's parity of each search's range, kept up to date through the flips.
    """
    n = cur.shape[0]
    m = s_pass.shape[0]
    alive = np.ones(m, dtype=np.bool_)
    touched = np.empty(m * started + 1, dtype=np.int64)
    touched_r = np.empty(m * started + 1, dtype=np.int32)
    nt = 0
    flips = 0
    for i in range(m):
        if s_hi[i] - s_lo[i] != 1:
            continue
        p = s_pass[i]
        q = s_lo[i]
        alive[i] = False
        search_of[block_off[p] + q // ks[p]] = -1
        if s_bpar[i] == s_apar[i]:
            continue  # already corrected through another search this round
        row0 = q // segs
        s0 = sigma_inv[p, q - row0 * segs]
        j = pi_inv[p, row0] - delta[p, s0]
        if j < 0:
            j += f
        j += s0 * f
        if j >= n:
            return s_pass[:0], s_lo[:0], s_hi[:0], s_apar[:0], s_bpar[:0], flips, -1
        cur[j] ^= 1
        s = j // f
        loc = j - s * f
        for r in range(started):
            t = loc + delta[r, s]
            if t >= f:
                t -= f
            row = pi[r, t]
            col = sigma[r, s]
            work[r, row] ^= np.uint64(1) << np.uint64(col)
            qr = row * segs + col
            fb = block_off[r] + qr // ks[r]
            diff[fb] ^= 1
            o = search_of[fb]
            if o >= 0 and s_lo[o] <= qr and qr < s_hi[o]:
                s_bpar[o] ^= 1
            touched[nt] = fb
            touched_r[nt] = r
            nt += 1
        flips += 1
    count = 0
    for i in range(m):
        if alive[i]:
            if s_bpar[i] == s_apar[i]:
                alive[i] = False
                p = s_pass[i]
                search_of[block_off[p] + s_lo[i] // ks[p]] = -1
            else:
                count += 1
    new_p = np.empty(count + nt, dtype=np.int32)
    new_lo = np.empty(count + nt, dtype=np.int64)
    new_hi = np.empty(count + nt, dtype=np.int64)
    new_a = np.empty(count + nt, dtype=np.uint8)
    new_b = np.empty(count + nt, dtype=np.uint8)
    c = 0
    for i in range(m):
        if alive[i]:
            p = s_pass[i]
            new_p[c] = p
            new_lo[c] = s_lo[i]
            new_hi[c] = s_hi[i]
            new_a[c] = s_apar[i]
            new_b[c] = s_bpar[i]
            search_of[block_off[p] + s_lo[i] // ks[p]] = c
            c += 1
    for t in range(nt):
        fb = touched[t]
        if diff[fb] == 1 and search_of[fb] < 0:
            r = touched_r[t]
            b = fb - block_off[r]
            search_of[fb] = c
            new_p[c] = r
            new_lo[c] = b * ks[r]
            new_hi[c] = min(padded, b * ks[r] + ks[r])
            new_a[c] = alice_top[fb]
            new_b[c] = alice_top[fb] ^ 1
            c += 1
    return new_p[:c], new_lo[:c], new_hi[:c], new_a[:c], new_b[:c], flips, 0


@dataclass(frozen=True)
class ParityRequest:
    """Bob's next question: start a pass (block size) or parities of ranges."""

    start_block: int  # 0: no new pass
    passes: U8Array
    lo: I64Array
    hi: I64Array


class CascadeBob:
    """Bob's side: drives the passes and binary searches and corrects his string."""

    def __init__(self, bits: U8Array, seed: bytes, sizes: list[int]) -> None:
        if not sizes or len(sizes) > MAX_PASSES:
            raise ValueError(f"need 1..{MAX_PASSES} passes")
        self.n = int(bits.shape[0])
        self._seed = seed
        self._sizes = [max(2, min(k, max(self.n, 2))) for k in sizes]
        passes = len(self._sizes)
        self._t = pass_tables(seed, range(passes), self.n)
        self._padded = self._t.padded
        self._work = np.zeros((passes, self._t.f), dtype=np.uint64)
        nbs = [(self._padded + k - 1) // k for k in self._sizes]
        self._nbs = nbs
        self._block_off = np.concatenate(([0], np.cumsum(nbs)[:-1])).astype(np.int64)
        total = int(sum(nbs))
        self._diff = np.zeros(total, dtype=np.uint8)
        self._search_of = np.full(total, -1, dtype=np.int32)
        self._alice_top = np.zeros(total, dtype=np.uint8)
        self._ks = np.array(self._sizes, dtype=np.int64)
        self._cur = np.array(bits, dtype=np.uint8, copy=True)
        self._started = 0
        self._s_pass = np.zeros(0, dtype=np.int32)
        self._s_lo = np.zeros(0, dtype=np.int64)
        self._s_hi = np.zeros(0, dtype=np.int64)
        self._s_apar = np.zeros(0, dtype=np.uint8)
        self._s_bpar = np.zeros(0, dtype=np.uint8)
        self._awaiting: str = "pass"
        self.leaked_bits = 0
        self.rounds = 0
        self.done = False
        self.corrected = 0

    def first_request(self) -> ParityRequest:
        return self._start_pass_request()

    def _start_pass_request(self) -> ParityRequest:
        self._awaiting = "pass"
        empty8 = np.zeros(0, dtype=np.uint8)
        empty64 = np.zeros(0, dtype=np.int64)
        return ParityRequest(self._sizes[self._started], empty8, empty64, empty64)

    def expected_answer_bits(self) -> int:
        if self._awaiting == "pass":
            return self._nbs[self._started]
        return int(self._s_pass.shape[0])

    def on_answer(self, parities: U8Array) -> ParityRequest | None:
        """Alice's parities for the last request; the next request, or None when done."""
        if self.done:
            raise CascadeError("Cascade already finished")
        if parities.shape[0] != self.expected_answer_bits():
            raise CascadeError("Cascade answer has the wrong number of parities")
        self.rounds += 1
        self.leaked_bits += int(parities.shape[0])
        answer = np.ascontiguousarray(parities, dtype=np.uint8)
        if self._awaiting == "pass":
            self._begin_pass(answer)
        else:
            _descend(
                self._work,
                self._t.segs,
                self._s_pass,
                self._s_lo,
                self._s_hi,
                self._s_apar,
                self._s_bpar,
                answer,
            )
        self._resolve()
        if self._s_pass.shape[0] == 0:
            if self._started >= len(self._sizes):
                self.done = True
                return None
            return self._start_pass_request()
        mid = (self._s_lo + self._s_hi) // 2
        self._awaiting = "search"
        return ParityRequest(0, self._s_pass.astype(np.uint8), self._s_lo.copy(), mid)

    def _begin_pass(self, top: U8Array) -> None:
        p = self._started
        t = self._t
        _pack(self._cur, t.f, t.segs, t.pi_inv[p], t.sigma_inv[p], t.delta[p], self._work[p])
        new = _begin(
            self._work,
            t.segs,
            self._padded,
            self._sizes[p],
            p,
            int(self._block_off[p]),
            top,
            self._diff,
            self._search_of,
            self._alice_top,
            int(self._s_pass.shape[0]),
        )
        self._started += 1
        self._s_pass = np.concatenate((self._s_pass, new[0]))
        self._s_lo = np.concatenate((self._s_lo, new[1]))
        self._s_hi = np.concatenate((self._s_hi, new[2]))
        self._s_apar = np.concatenate((self._s_apar, new[3]))
        self._s_bpar = np.concatenate((self._s_bpar, new[4]))

    def _resolve(self) -> None:
        t = self._t
        while True:
            out = _settle(
                self._work,
                self._cur,
                self._diff,
                self._search_of,
                self._alice_top,
                self._block_off,
                self._ks,
                self._started,
                t.pi,
                t.pi_inv,
                t.sigma,
                t.sigma_inv,
                t.delta,
                t.f,
                t.segs,
                self._padded,
                self._s_pass,
                self._s_lo,
                self._s_hi,
                self._s_apar,
                self._s_bpar,
            )
            self._s_pass, self._s_lo, self._s_hi, self._s_apar, self._s_bpar, flips, status = out
            if status != 0:
                raise CascadeError("a parity search ended outside the string")
            self.corrected += int(flips)
            if not np.any(self._s_hi - self._s_lo == 1):
                return

    def corrected_bits(self) -> U8Array:
        """Bob's string now (original order)."""
        out: U8Array = self._cur.copy()
        return out


def leaked_bits_expected(n: int, qber: float, efficiency: float) -> int:
    """Planning figure: ``efficiency * n * H2(qber)``."""
    q = min(max(qber, 1e-6), 0.5)
    h = -q * math.log2(q) - (1 - q) * math.log2(1 - q)
    return math.ceil(efficiency * n * h)
