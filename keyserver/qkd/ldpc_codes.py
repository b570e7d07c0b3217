"""Parity-check matrices for syndrome-based LDPC reconciliation and the choice of code rate.

Codes are random irregular LDPC codes (column degrees 2/3/6, check degrees as equal as the rate
allows, no repeated edges), built deterministically from ``(n, m, seed)`` so that Alice and
Bob construct the same matrix independently. The number of checks ``m`` (= syndrome bits leaked per
frame) is chosen from the estimated QBER: ``m = f_design(qber) * H2(qber) * n``, rounded up to a
grid so that a handful of matrices serve all blocks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

U8Array = npt.NDArray[np.uint8]


def binary_entropy(p: float) -> float:
    """H2(p) in bits; 0 at p in {0, 1}."""
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return -p * math.log2(p) - (1.0 - p) * math.log2(1.0 - p)


@dataclass(frozen=True, eq=False)
class ParityCheckMatrix:
    """An m x n binary parity-check matrix in CSR form (row_ptr, col_idx) plus the scipy matrix."""

    n: int
    m: int
    row_ptr: npt.NDArray[np.int32]
    col_idx: npt.NDArray[np.int32]
    matrix: sp.csr_matrix

    @property
    def rate(self) -> float:
        return 1.0 - self.m / self.n

    def syndromes(self, frames: U8Array) -> U8Array:
        """Syndromes ``H x mod 2`` of each row of ``frames`` (shape (F, n)) -> shape (F, m)."""
        x = np.asarray(frames, dtype=np.uint8)
        if x.ndim != 2 or x.shape[1] != self.n:
            raise ValueError(f"frames must have shape (F, {self.n})")
        # uint8 arithmetic wraps modulo 256, which keeps the parity (row weights are < 256)
        s = self.matrix @ x.T
        return np.ascontiguousarray((s.T & 1).astype(np.uint8))


# Variable-node degree profile (degree, fraction of columns). Measured with the layered min-sum
# decoder at n = 8192, QBER 3.3 %: it converges at f ~ 1.4 in ~11 iterations where column-weight-3
# regular codes need f ~ 1.5 and ~20 iterations (docs/bb84.md).
DEFAULT_DEGREES: tuple[tuple[int, float], ...] = ((2, 0.25), (3, 0.55), (6, 0.20))


def random_code(
    n: int,
    m: int,
    seed: int = 0,
    degrees: tuple[tuple[int, float], ...] = DEFAULT_DEGREES,
) -> ParityCheckMatrix:
    """Random irregular LDPC code with the given column-degree profile, check degrees within 1 of
    each other and no repeated edges; deterministic in ``(n, m, seed, degrees)``."""
    if not 0 < m < n:
        raise ValueError("need 0 < m < n")
    if max(d for d, _ in degrees) > m:
        raise ValueError("column degree larger than the number of checks")
    rng = np.random.default_rng([seed, n, m])
    degs = np.array([d for d, _ in degrees])
    counts = np.array([int(frac * n) for _, frac in degrees])
    # at high rates (few checks) the degree-2 chain cannot be longer than m - 1 columns
    two = degs == 2
    if two.any() and counts[two].sum() > (m * 9) // 10:
        spare = counts[two].sum() - (m * 9) // 10
        counts[two] = (m * 9) // 10
        counts[~two] += (spare * counts[~two]) // counts[~two].sum()
    counts[-1] += n - counts.sum()
    col_deg = rng.permutation(np.repeat(degs, counts))
    # degree-2 columns form a chain over distinct rows (like the accumulator of an IRA code): random
    # degree-2 columns would close short cycles, i.e. low-weight codewords that BP converges to
    deg2 = np.flatnonzero(col_deg == 2)
    chain_rows = rng.permutation(m)[: deg2.size + 1]
    chain_r = np.concatenate([chain_rows[:-1], chain_rows[1:]])
    chain_c = np.concatenate([deg2, deg2])
    others = np.flatnonzero(col_deg != 2)
    cols = np.repeat(others.astype(np.int64), col_deg[others])
    total = cols.shape[0] + chain_c.shape[0]
    target = np.full(m, total // m, dtype=np.int64)
    target[rng.permutation(m)[: total % m]] += 1
    deficit = target - np.bincount(chain_r, minlength=m)
    if np.any(deficit < 0):
        raise ValueError("rate too high for this degree profile")
    rows = rng.permutation(np.repeat(np.arange(m, dtype=np.int64), deficit))
    edges = rows.shape[0]
    chain_key = chain_c.astype(np.int64) * m + chain_r
    # remove repeated (row, col) pairs by swapping the row of one copy with a random edge's row
    for _ in range(1000):
        key = cols * m + rows
        order = np.argsort(key, kind="stable")
        dup = order[1:][key[order[1:]] == key[order[:-1]]]
        dup = np.union1d(dup, np.flatnonzero(np.isin(key, chain_key)))
        if dup.size == 0:
            break
        other = rng.integers(0, edges, size=dup.size)
        rows[dup], rows[other] = rows[other], rows[dup].copy()
    else:  # pragma: no cover - practically unreachable for sensible n, m
        raise RuntimeError("could not build a code without repeated edges")
    rows = np.concatenate([rows, chain_r.astype(np.int64)])
    cols = np.concatenate([cols, chain_c.astype(np.int64)])
    edges = rows.shape[0]
    matrix = sp.csr_matrix(
        (np.ones(edges, dtype=np.uint8), (rows, cols)), shape=(m, n), dtype=np.uint8
    )
    matrix.sort_indices()
    return ParityCheckMatrix(
        n=n,
        m=m,
        row_ptr=matrix.indptr.astype(np.int32),
        col_idx=matrix.indices.astype(np.int32),
        matrix=matrix,
    )


def design_efficiency(qber: float) -> float:
    """Syndrome overhead f used for a code at this QBER with the codes built here.

    Short codes need more margin at low QBER (H2 small, few checks); the values are
    measured so that the layered decoder converges in ~8 iterations with a frame error
    rate well below 1 % at n = 8192 (a little more margin costs less key than the
    iterations it saves cost time) (see docs/bb84.md).
    """
    if qber <= 0.015:
        return 1.6
    if qber <= 0.025:
        return 1.55
    if qber <= 0.04:
        return 1.5
    if qber <= 0.06:
        return 1.45
    return 1.38


def syndrome_length(n: int, qber: float, efficiency: float | None = None, grid: int = 64) -> int:
    """Number of checks m for an n-bit frame at this QBER, rounded up to a multiple of ``grid``."""
    f = design_efficiency(qber) if efficiency is None else efficiency
    m = math.ceil(f * binary_entropy(qber) * n / grid) * grid
    return min(max(m, grid), n - grid)
