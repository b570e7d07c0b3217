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

SEGMENT = 1 << 16
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


# A pass's permutation, without an n-entry table: the string is cut into S segments of F bits
# (the last one r <= F bits); bit l of segment s goes to row pi((l + delta_s) mod F) and column
# sigma(s) of an F x S array read row by row, skipping the F - r cells of the missing bits. Bits of
# one segment land in random rows (pi), bits of different segments in random rows too (their own
# offsets delta_s), so every pair of positions is separated as in a uniform shuffle, also for blocks
# larger than a segment. Table layout (int64): [F, S, r, hole column, pi, pi^-1, sigma, sigma^-1,
# delta, hole_row, holes_before_row].
_H = 4


def pass_table(seed: bytes, pass_no: int, n: int) -> npt.NDArray[np.int64]:
    f = min(SEGMENT, n)
    segs = (n + f - 1) // f
    r = n - (segs - 1) * f
    pi = _fisher_yates(_words(seed, b"rows%d" % pass_no, f), f).astype(np.int64)
    sigma = _fisher_yates(_words(seed, b"cols%d" % pass_no, segs), segs).astype(np.int64)
    delta = (_words(seed, b"shift%d" % pass_no, segs)[:segs].astype(np.int64) % f) if segs > 1 \
        else np.zeros(1, dtype=np.int64)
    pi_inv = np.empty_like(pi)
    pi_inv[pi] = np.arange(f, dtype=np.int64)
    sigma_inv = np.empty_like(sigma)
    sigma_inv[sigma] = np.arange(segs, dtype=np.int64)
    hole_row = np.zeros(f, dtype=np.int64)
    if r < f:
        missing = np.arange(r, f, dtype=np.int64)
        hole_row[pi[(missing + delta[segs - 1]) % f]] = 1
    before = np.concatenate(([0], np.cumsum(hole_row)[:-1])).astype(np.int64)
    head = np.array([f, segs, r, sigma[segs - 1]], dtype=np.int64)
    return np.concatenate((head, pi, pi_inv, sigma, sigma_inv, delta, hole_row, before))


@njit(cache=True, nogil=True)
def _fwd(t: npt.NDArray[np.int64], j: int) -> int:
    f = t[0]
    segs = t[1]
    hole_col = t[3]
    s = j // f
    loc = j - s * f
    pi0 = _H
    sig0 = _H + 2 * f
    delta0 = sig0 + 2 * segs
    hole0 = delta0 + segs
    before0 = hole0 + f
    row = t[pi0 + (loc + t[delta0 + s]) % f]
    col = t[sig0 + s]
    q = row * segs + col - t[before0 + row]
    if t[hole0 + row] == 1 and hole_col < col:
        q -= 1
    return int(q)


@njit(cache=True, nogil=True)
def _inv(t: npt.NDArray[np.int64], q: int) -> int:
    f = t[0]
    segs = t[1]
    hole_col = t[3]
    pinv0 = _H + f
    siginv0 = _H + 2 * f + segs
    delta0 = _H + 2 * f + 2 * segs
    hole0 = delta0 + segs
    before0 = hole0 + f
    lo = 0
    hi = f - 1
    while lo < hi:  # the last row whose start is <= q
        mid = (lo + hi + 1) // 2
        if mid * segs - t[before0 + mid] <= q:
            lo = mid
        else:
            hi = mid - 1
    row = lo
    c = q - (row * segs - t[before0 + row])
    if t[hole0 + row] == 1 and c >= hole_col:
        c += 1
    s = t[siginv0 + c]
    loc = (t[pinv0 + row] - t[delta0 + s]) % f
    return int(s * f + loc)


@njit(cache=True, nogil=True)
def _scatter(bits: U8Array, t: npt.NDArray[np.int64]) -> U8Array:
    """The string in the pass's order (``out[fwd(j)] = bits[j]``), written row by row."""
    n = bits.shape[0]
    f = t[0]
    segs = t[1]
    hole_col = t[3]
    pinv0 = _H + f
    siginv0 = _H + 2 * f + segs
    delta0 = _H + 2 * f + 2 * segs
    hole0 = delta0 + segs
    out = np.empty(n, dtype=np.uint8)
    base = np.empty(segs, dtype=np.int64)  # per column: segment start and offset
    shift = np.empty(segs, dtype=np.int64)
    for c in range(segs):
        sg = t[siginv0 + c]
        base[c] = sg * f
        shift[c] = f - t[delta0 + sg]
    q = 0
    for row in range(f):
        src = t[pinv0 + row]
        hole = t[hole0 + row] == 1
        for c in range(segs):
            if hole and c == hole_col:
                continue
            loc = src + shift[c]
            if loc >= f:
                loc -= f
            out[q] = bits[base[c] + loc]
            q += 1
    return out


@njit(cache=True, nogil=True)
def _prefix_xor(a: U8Array) -> U8Array:
    out = np.zeros(a.shape[0] + 1, dtype=np.uint8)
    acc = np.uint8(0)
    for i in range(a.shape[0]):
        acc ^= a[i]
        out[i + 1] = acc
    return out


@njit(cache=True, nogil=True)
def _block_parities(a: U8Array, k: int) -> U8Array:
    n = a.shape[0]
    nb = (n + k - 1) // k
    out = np.zeros(nb, dtype=np.uint8)
    for b in range(nb):
        acc = np.uint8(0)
        for i in range(b * k, min(n, b * k + k)):
            acc ^= a[i]
        out[b] = acc
    return out


@njit(cache=True, nogil=True)
def _range_parity(a: U8Array, lo: int, hi: int) -> np.uint8:
    acc = np.uint8(0)
    for i in range(lo, hi):
        acc ^= a[i]
    return acc


# -- Alice ---------------------------------------------------------------------------------------


class CascadeAlice:
    """Alice's side: answers parity requests on her (fixed) string; counts what she discloses."""

    def __init__(self, bits: U8Array, seed: bytes, max_leak: int) -> None:
        self.n = int(bits.shape[0])
        self._bits = bits
        self._seed = seed
        self._prefix: list[U8Array] = []
        self._blocks: list[int] = []
        self.max_leak = max_leak
        self.leaked_bits = 0

    @property
    def passes(self) -> int:
        return len(self._prefix)

    def start_pass(self, block: int) -> U8Array:
        """Top-level parities of the next pass with blocks of ``block`` bits."""
        if len(self._prefix) >= MAX_PASSES:
            raise CascadeError(f"more than {MAX_PASSES} Cascade passes")
        if not 2 <= block <= max(self.n, 2):
            raise CascadeError("Cascade block size out of range")
        table = pass_table(self._seed, len(self._prefix), self.n)
        shuffled = _scatter(self._bits, table)
        prefix = _prefix_xor(shuffled)
        self._prefix.append(prefix)
        self._blocks.append(block)
        nb = (self.n + block - 1) // block
        bounds = np.minimum(np.arange(0, nb + 1, dtype=np.int64) * block, self.n)
        out: U8Array = prefix[bounds[1:]] ^ prefix[bounds[:-1]]
        return self._disclose(out)

    def answer(self, passes: U8Array, lo: I64Array, hi: I64Array) -> U8Array:
        """Parities of Alice's shuffled string on ``[lo, hi)`` in the given passes."""
        if not (passes.shape == lo.shape == hi.shape):
            raise CascadeError("parity request arrays differ in length")
        if passes.shape[0] == 0:
            return np.zeros(0, dtype=np.uint8)
        if int(passes.max()) >= len(self._prefix):
            raise CascadeError("parity request names a pass that has not started")
        if int(lo.min()) < 0 or int(hi.max()) > self.n or bool(np.any(lo >= hi)):
            raise CascadeError("parity request range out of bounds")
        out = np.empty(passes.shape[0], dtype=np.uint8)
        for p in range(len(self._prefix)):
            sel = passes == p
            if np.any(sel):
                pre = self._prefix[p]
                out[sel] = pre[hi[sel]] ^ pre[lo[sel]]
        return self._disclose(out)

    def _disclose(self, parities: U8Array) -> U8Array:
        self.leaked_bits += int(parities.shape[0])
        if self.leaked_bits > self.max_leak:
            raise CascadeError("Cascade disclosed more than the block can afford")
        return parities


# -- Bob -----------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _descend(
    work: U8Array,
    s_pass: I32Array,
    s_lo: I64Array,
    s_hi: I64Array,
    s_apar: U8Array,
    a_left: U8Array,
) -> None:
    for i in range(s_pass.shape[0]):
        p = s_pass[i]
        lo = s_lo[i]
        hi = s_hi[i]
        mid = (lo + hi) // 2
        b_left = _range_parity(work[p], lo, mid)
        if a_left[i] != b_left:
            s_hi[i] = mid
            s_apar[i] = a_left[i]
        else:
            s_lo[i] = mid
            s_apar[i] = s_apar[i] ^ a_left[i]


@njit(cache=True, nogil=True)
def _settle(
    work: U8Array,
    diff: U8Array,
    searching: npt.NDArray[np.bool_],
    alice_top: U8Array,
    block_off: I64Array,
    ks: I64Array,
    started: int,
    tables: npt.NDArray[np.int64],
    cur: U8Array,
    s_pass: I32Array,
    s_lo: I64Array,
    s_hi: I64Array,
    s_apar: U8Array,
) -> tuple[I32Array, I64Array, I64Array, U8Array, int]:
    """Flip the bits found, drop searches whose range became even, start searches in odd blocks.

    ``work`` is (passes, n): Bob's string in each pass's order; ``diff``/``searching``/
    ``alice_top`` are flat over all passes' top-level blocks (pass p starts at block_off[p]).
    """
    n = work.shape[1]
    m = s_pass.shape[0]
    alive = np.ones(m, dtype=np.bool_)
    touched_p = np.empty(m * started + 1, dtype=np.int32)
    touched_b = np.empty(m * started + 1, dtype=np.int64)
    nt = 0
    flips = 0
    for i in range(m):
        if s_hi[i] - s_lo[i] == 1:
            p = s_pass[i]
            q = s_lo[i]
            alive[i] = False
            searching[block_off[p] + q // ks[p]] = False
            if work[p, q] == s_apar[i]:
                continue  # already corrected through another search this round
            j = _inv(tables[p], q)
            cur[j] ^= 1
            for r in range(started):
                qr = _fwd(tables[r], j)
                work[r, qr] ^= 1
                b = qr // ks[r]
                diff[block_off[r] + b] ^= 1
                touched_p[nt] = r
                touched_b[nt] = b
                nt += 1
            flips += 1
    for i in range(m):
        if alive[i]:
            p = s_pass[i]
            if _range_parity(work[p], s_lo[i], s_hi[i]) == s_apar[i]:
                alive[i] = False
                searching[block_off[p] + s_lo[i] // ks[p]] = False
    count = 0
    for i in range(m):
        if alive[i]:
            count += 1
    new_p = np.empty(count + nt, dtype=np.int32)
    new_lo = np.empty(count + nt, dtype=np.int64)
    new_hi = np.empty(count + nt, dtype=np.int64)
    new_a = np.empty(count + nt, dtype=np.uint8)
    c = 0
    for i in range(m):
        if alive[i]:
            new_p[c] = s_pass[i]
            new_lo[c] = s_lo[i]
            new_hi[c] = s_hi[i]
            new_a[c] = s_apar[i]
            c += 1
    for t in range(nt):
        r = touched_p[t]
        b = touched_b[t]
        f = block_off[r] + b
        if diff[f] == 1 and not searching[f]:
            searching[f] = True
            new_p[c] = r
            new_lo[c] = b * ks[r]
            new_hi[c] = min(n, b * ks[r] + ks[r])
            new_a[c] = alice_top[f]
            c += 1
    return new_p[:c], new_lo[:c], new_hi[:c], new_a[:c], flips


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
        self._orig = bits.copy()
        passes = len(self._sizes)
        self._work = np.zeros((passes, self.n), dtype=np.uint8)
        nbs = [(self.n + k - 1) // k for k in self._sizes]
        self._block_off = np.concatenate(([0], np.cumsum(nbs)[:-1])).astype(np.int64)
        total = int(sum(nbs))
        self._diff = np.zeros(total, dtype=np.uint8)
        self._searching = np.zeros(total, dtype=np.bool_)
        self._alice_top = np.zeros(total, dtype=np.uint8)
        self._ks = np.array(self._sizes, dtype=np.int64)
        self._tables = np.stack([pass_table(seed, p, max(self.n, 1)) for p in range(passes)])
        self._cur = bits.copy()
        self._started = 0
        self._s_pass = np.zeros(0, dtype=np.int32)
        self._s_lo = np.zeros(0, dtype=np.int64)
        self._s_hi = np.zeros(0, dtype=np.int64)
        self._s_apar = np.zeros(0, dtype=np.uint8)
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
            k = self._sizes[self._started]
            return (self.n + k - 1) // k
        return int(self._s_pass.shape[0])

    def on_answer(self, parities: U8Array) -> ParityRequest | None:
        """Alice's parities for the last request; the next request, or None when done."""
        if self.done:
            raise CascadeError("Cascade already finished")
        if parities.shape[0] != self.expected_answer_bits():
            raise CascadeError("Cascade answer has the wrong number of parities")
        self.rounds += 1
        self.leaked_bits += int(parities.shape[0])
        if self._awaiting == "pass":
            self._begin_pass(parities)
        else:
            _descend(
                self._work, self._s_pass, self._s_lo, self._s_hi, self._s_apar,
                parities.astype(np.uint8),
            )
        self._resolve()
        while self._s_pass.shape[0] == 0:
            if self._started >= len(self._sizes):
                self.done = True
                return None
            return self._start_pass_request()
        mid = (self._s_lo + self._s_hi) // 2
        self._awaiting = "search"
        return ParityRequest(0, self._s_pass.astype(np.uint8), self._s_lo.copy(), mid)

    def _begin_pass(self, top: U8Array) -> None:
        p = self._started
        self._work[p] = _scatter(self._cur, self._tables[p])
        off = int(self._block_off[p])
        nb = top.shape[0]
        self._alice_top[off : off + nb] = top
        self._diff[off : off + nb] = top ^ _block_parities(self._work[p], self._sizes[p])
        self._started += 1
        odd = np.flatnonzero(self._diff[off : off + nb]).astype(np.int64)
        self._searching[off + odd] = True
        k = self._sizes[p]
        self._s_pass = np.concatenate((self._s_pass, np.full(odd.shape[0], p, dtype=np.int32)))
        self._s_lo = np.concatenate((self._s_lo, odd * k))
        self._s_hi = np.concatenate((self._s_hi, np.minimum(odd * k + k, self.n)))
        self._s_apar = np.concatenate((self._s_apar, self._alice_top[off + odd]))

    def _resolve(self) -> None:
        while True:
            out = _settle(
                self._work, self._diff, self._searching, self._alice_top, self._block_off,
                self._ks, self._started, self._tables, self._cur, self._s_pass, self._s_lo,
                self._s_hi, self._s_apar,
            )
            self._s_pass, self._s_lo, self._s_hi, self._s_apar, flips = out
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
