"""Toeplitz hashing (2-universal) for privacy amplification and key verification.

A Toeplitz matrix ``T`` of size ``out_len x n`` is fixed by ``n + out_len - 1`` seed bits ``t``:
``T[i, j] = t[i - j + n - 1]``. Then ``(T x)_i = sum_j t[i - j + n - 1] x_j`` is entry
``i + n - 1`` of the convolution ``t * x``, computed with a real FFT of length
``>= n + out_len - 1`` (the circular wrap-around only touches entries below ``n - 1``, which
are not used), rounded to the exact integer and reduced mod 2.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import scipy.fft

U8Array = npt.NDArray[np.uint8]


def toeplitz_seed_length(n: int, out_len: int) -> int:
    return n + out_len - 1


def toeplitz_hash(bits: U8Array, seed_bits: U8Array, out_len: int) -> U8Array:
    """``T x mod 2`` for the Toeplitz matrix defined by ``seed_bits`` (0/1 arrays, uint8)."""
    x = np.asarray(bits, dtype=np.uint8)
    t = np.asarray(seed_bits, dtype=np.uint8)
    n = x.shape[0]
    if x.ndim != 1 or t.ndim != 1:
        raise ValueError("bits and seed must be 1-D")
    if out_len < 1 or n < 1:
        raise ValueError("need at least one input and one output bit")
    if t.shape[0] != toeplitz_seed_length(n, out_len):
        raise ValueError(f"seed must have n + out_len - 1 = {n + out_len - 1} bits")
    size = scipy.fft.next_fast_len(n + out_len - 1, real=True)
    # Convolve the centred sequences (bits - 1/2): their products are small and zero-mean, so a
    # float32 FFT reproduces them to ~1e-3 even for n ~ 1e7, then add back the exact integer terms:
    #   sum t x = conv(t - 1/2, x - 1/2) + (sum of the t window)/2 + (sum x)/2 - n/4
    cumulative = np.concatenate(([0], np.cumsum(t, dtype=np.int64)))
    i = np.arange(out_len)
    exact_terms = (
        0.5 * (cumulative[i + n] - cumulative[i]) + 0.5 * int(x.sum(dtype=np.int64)) - n / 4
    )
    for dtype in ("float32", "float64"):
        xc: npt.NDArray[np.floating] = x.astype(dtype)
        tc: npt.NDArray[np.floating] = t.astype(dtype)
        xc -= 0.5
        tc -= 0.5
        fx = scipy.fft.rfft(xc, size)
        ft = scipy.fft.rfft(tc, size)
        centred = scipy.fft.irfft(fx * ft, size)[n - 1 : n - 1 + out_len]
        total = centred.astype(np.float64) + exact_terms
        rounded = np.rint(total)
        # the exact sums are integers; accept only if every value is well within 1/4 of one
        if float(np.max(np.abs(total - rounded))) < 0.25:
            out: U8Array = (rounded.astype(np.int64) & 1).astype(np.uint8)
            return out
    raise ArithmeticError("FFT rounding error too large for this input size")


def verification_tag(bits: U8Array, seed_bits: U8Array, tag_bits: int) -> bytes:
    """Universal-hash tag of ``bits`` (Toeplitz hash to ``tag_bits`` bits), as bytes.

    Two different strings collide with probability ``2^-tag_bits`` over the random seed.
    """
    return toeplitz_tag(bits, seed_bits, tag_bits)


def toeplitz_tag(bits: U8Array, seed_bits: U8Array, tag_bits: int) -> bytes:
    """``packbits(toeplitz_hash(bits, seed_bits, tag_bits))``, computed on packed bits.

    For short outputs (verification tags) this is much cheaper than an FFT: with ``x'`` the reversed
    input, output bit ``i`` is the parity of ``t[i : i + n] & x'``, evaluated on bytes with 8
    pre-shifted packings of the seed.
    """
    x = np.asarray(bits, dtype=np.uint8)
    t = np.asarray(seed_bits, dtype=np.uint8)
    n = x.shape[0]
    if x.ndim != 1 or t.ndim != 1 or n < 1 or tag_bits < 1:
        raise ValueError("need 1-D bits and seed, n >= 1, tag_bits >= 1")
    if t.shape[0] != toeplitz_seed_length(n, tag_bits):
        raise ValueError(f"seed must have n + tag_bits - 1 = {n + tag_bits - 1} bits")
    nbytes = (n + 7) // 8
    xr = np.packbits(x[::-1])  # zero-padded at the end to whole bytes
    padded = np.zeros(t.shape[0] + 16, dtype=np.uint8)
    padded[: t.shape[0]] = t
    shifted = [np.packbits(padded[b:]) for b in range(8)]
    out = np.zeros(tag_bits, dtype=np.uint8)
    for i in range(tag_bits):
        a, b = divmod(i, 8)
        acc = np.bitwise_xor.reduce(shifted[b][a : a + nbytes] & xr)
        out[i] = int(acc).bit_count() & 1
    return np.packbits(out).tobytes()


_PARITY = np.array([bin(i).count("1") & 1 for i in range(256)], dtype=np.uint8)


def frame_tags(frames: U8Array, hash_bits: U8Array) -> U8Array:
    """Short per-frame tags ``(R^T x_f) mod 2`` of each row ``x_f`` for a random 0/1 matrix ``R``
    (shape ``(n, k)``); a wrong frame passes with probability ``2^-k``. Returns shape (F, k).

    Computed on packed bits: tag bit ``k`` of a frame is the parity of ``frame & R[:, k]``.
    """
    x = np.asarray(frames, dtype=np.uint8)
    r = np.asarray(hash_bits, dtype=np.uint8)
    if x.ndim != 2 or r.ndim != 2 or x.shape[1] != r.shape[0]:
        raise ValueError("frames must be (F, n) and hash_bits (n, k)")
    pad = (-x.shape[1]) % 64
    xp = np.packbits(np.pad(x, ((0, 0), (0, pad))), axis=1).view(np.uint64)  # (F, words)
    rp = np.packbits(np.pad(r.T, ((0, 0), (0, pad))), axis=1).copy().view(np.uint64)  # (k, words)
    folded = np.bitwise_xor.reduce(xp[:, None, :] & rp[None, :, :], axis=2)  # (F, k) uint64
    as_bytes = folded.view(np.uint8).reshape(folded.shape[0], folded.shape[1], 8)
    out: U8Array = _PARITY[np.bitwise_xor.reduce(as_bytes, axis=2)]
    return out
