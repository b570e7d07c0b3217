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

Permutations act within segments of ``SEGMENT`` bits (the same permutation for every segment of a
pass), which keeps their tables small for long blocks; the errors are independent of position, so
the mixing is as good as a full shuffle. The block sizes come from the QBER expected for the
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
    then six passes with blocks of ``n / 2`` that find the last few errors cheaply.
    """
    q = min(max(qber, 1e-4), 0.25)
    k1 = max(4, round(0.6 / q))
    half = max(2, n // 2)
    sizes = [min(k, half) for k in (k1, 6 * k1, 36 * k1, 216 * k1)]
    return sizes + [half] * 6


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


@dataclass(frozen=True)
class PassLayout:
    """One pass: segment permutations and the top-level block size."""

    perm_full: I32Array  # permuted local position -> local position (full segments)
    inv_full: I32Array
    perm_rest: I32Array  # the same for the last, shorter segment
    inv_rest: I32Array
    block: int


def pass_layout(seed: bytes, pass_no: int, n: int, block: int) -> PassLayout:
    full = min(SEGMENT, n)
    rest = n % SEGMENT if n > SEGMENT else 0
    pf = _fisher_yates(_words(seed, b"full%d" % pass_no, full), full)
    pr = _fisher_yates(_words(seed, b"rest%d" % pass_no, rest), rest)
    inv_f = np.empty_like(pf)
    inv_f[pf] = np.arange(full, dtype=np.int32)
    inv_r = np.empty_like(pr)
    inv_r[pr] = np.arange(rest, dtype=np.int32)
    return PassLayout(pf, inv_f, pr, inv_r, block)


@njit(cache=True, nogil=True)
def _gather(bits: U8Array, perm_full: I32Array, perm_rest: I32Array) -> U8Array:
    """``out[q] = bits[original position of permuted position q]``."""
    n = bits.shape[0]
    seg = perm_full.shape[0]
    out = np.empty(n, dtype=np.uint8)
    nfull = n // seg
    for s in range(nfull):
        base = s * seg
        for q in range(seg):
            out[base + q] = bits[base + perm_full[q]]
    base = nfull * seg
    for q in range(n - base):
        out[base + q] = bits[base + perm_rest[q]]
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
        layout = pass_layout(self._seed, len(self._prefix), self.n, block)
        shuffled = _gather(self._bits, layout.perm_full, layout.perm_rest)
        prefix = _prefix_xor(shuffled)
        self._prefix.append(prefix)
        self._blocks.append(block)
        bounds = np.minimum(np.arange(0, self.n + block, block, dtype=np.int64), self.n)
        bounds = np.unique(bounds)
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
def _to_perm(j: int, inv_full: I32Array, inv_rest: I32Array, n: int) -> int:
    seg = inv_full.shape[0]
    s = j // seg
    base = s * seg
    if base + seg <= n:
        return base + inv_full[j - base]
    return base + inv_rest[j - base]


@njit(cache=True, nogil=True)
def _from_perm(q: int, perm_full: I32Array, perm_rest: I32Array, n: int) -> int:
    seg = perm_full.shape[0]
    s = q // seg
    base = s * seg
    if base + seg <= n:
        return base + perm_full[q - base]
    return base + perm_rest[q - base]


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
    perm_full: I32Array,
    inv_full: I32Array,
    perm_rest: I32Array,
    inv_rest: I32Array,
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
            j = _from_perm(q, perm_full[p], perm_rest[p], n)
            for r in range(started):
                qr = _to_perm(j, inv_full[r], inv_rest[r], n)
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
        seg = min(SEGMENT, max(self.n, 1))
        rest = max(self.n % SEGMENT if self.n > SEGMENT else 0, 1)
        self._perm_full = np.zeros((passes, seg), dtype=np.int32)
        self._inv_full = np.zeros((passes, seg), dtype=np.int32)
        self._perm_rest = np.zeros((passes, rest), dtype=np.int32)
        self._inv_rest = np.zeros((passes, rest), dtype=np.int32)
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
        layout = pass_layout(self._seed, p, self.n, self._sizes[p])
        self._perm_full[p, : layout.perm_full.shape[0]] = layout.perm_full
        self._inv_full[p, : layout.inv_full.shape[0]] = layout.inv_full
        self._perm_rest[p, : layout.perm_rest.shape[0]] = layout.perm_rest
        self._inv_rest[p, : layout.inv_rest.shape[0]] = layout.inv_rest
        current = self.corrected_bits()
        self._work[p] = _gather(current, layout.perm_full, layout.perm_rest)
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
                self._ks, self._started, self._perm_full, self._inv_full, self._perm_rest,
                self._inv_rest, self._s_pass, self._s_lo, self._s_hi, self._s_apar,
            )
            self._s_pass, self._s_lo, self._s_hi, self._s_apar, flips = out
            self.corrected += int(flips)
            if not np.any(self._s_hi - self._s_lo == 1):
                return

    def corrected_bits(self) -> U8Array:
        """Bob's string now (original order)."""
        if self._started == 0:
            return self._orig.copy()
        inv_full = self._inv_full[0, : min(SEGMENT, self.n)]
        inv_rest = self._inv_rest[0, : (self.n % SEGMENT if self.n > SEGMENT else 0)]
        # work[0][q] = bits[from_perm(q)]  ->  bits[j] = work[0][to_perm(j)]
        return _gather(self._work[0], inv_full, inv_rest)


def leaked_bits_expected(n: int, qber: float, efficiency: float) -> int:
    """Planning figure: ``efficiency * n * H2(qber)``."""
    q = min(max(qber, 1e-6), 0.5)
    h = -q * math.log2(q) - (1 - q) * math.log2(1 - q)
    return math.ceil(efficiency * n * h)
