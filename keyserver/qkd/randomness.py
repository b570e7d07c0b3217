"""Randomness of the QKD modules: a DRBG seeded from the OS CSPRNG, or (tests only) from a seed.

Every random choice that matters for security comes from :class:`RandomSource`: Alice's bit
values, bases and intensities, Bob's bases, and every public random seed of the post-processing
(Cascade permutations, the verification hash key, the privacy-amplification seed). In hardware
these come from a QRNG; here the stand-in is AES-256 in counter mode (the core of NIST SP 800-90A
CTR_DRBG) keyed with 32 bytes from ``os.urandom``, re-keyed from ``os.urandom`` for every stream
(one per block and purpose), so no state is shared between blocks.

``seed`` (tests and benchmarks only) replaces ``os.urandom`` with SHA-256 of the seed and the
stream's label: reproducible, and *not secret*. A module refuses a seeded source unless its
config says ``testing = true``, and reports ``seeded_source`` in its status.

Simulated *nature* (which pulses the fibre delivers, what Eve's detector sees, dark counts, which
detector fires for a photon measured in the wrong basis) is not a secret of Alice or Bob; it uses
numpy's PCG64 (:func:`nature`), seeded from the OS or from the test seed.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

U8Array = npt.NDArray[np.uint8]
U32Array = npt.NDArray[np.uint32]

_BLOCK = 1 << 20  # keystream bytes generated per call of the cipher


class RandomSource:
    """A deterministic random bit generator: AES-256-CTR keyed from the OS CSPRNG (or a seed).

    ``RandomSource(None, b"label")`` draws its key from ``os.urandom``; ``RandomSource(7, b"x")``
    derives it from the seed (reproducible). :meth:`child` makes an independent stream.
    """

    def __init__(self, seed: int | None, label: bytes) -> None:
        self.seeded = seed is not None
        self._seed = seed
        self._label = label
        if seed is None:
            key = os.urandom(32)
        else:
            material = b"qphone-qkd-test-seed\0" + str(seed).encode() + b"\0" + label
            key = hashlib.sha256(material).digest()
        self._enc = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()

    def child(self, label: bytes) -> RandomSource:
        """An independent stream (fresh OS key, or seed-derived with a longer label)."""
        return RandomSource(self._seed, self._label + b"/" + label)

    def bytes(self, n: int) -> bytes:
        if n < 0:
            raise ValueError("n must be >= 0")
        return self._enc.update(bytes(n))

    def uint32(self, n: int) -> U32Array:
        out: U32Array = np.frombuffer(self.bytes(4 * n), dtype=np.uint32).copy()
        return out

    def bits(self, n: int) -> U8Array:
        """``n`` uniform bits as a 0/1 uint8 array."""
        packed = np.frombuffer(self.bytes((n + 7) // 8), dtype=np.uint8)
        out: U8Array = np.unpackbits(packed)[:n].copy()
        return out

    def bernoulli(self, n: int, p: float) -> U8Array:
        """``n`` independent bits equal to 1 with probability ``p`` (resolution 2^-32)."""
        threshold = np.uint64(round(min(max(p, 0.0), 1.0) * 2**32))
        out: U8Array = (self.uint32(n).astype(np.uint64) < threshold).astype(np.uint8)
        return out


def nature(seed: int | None, label: bytes) -> np.random.Generator:
    """The generator of simulated physics (not a secret of either party)."""
    if seed is None:
        return np.random.default_rng()
    digest = hashlib.sha256(b"qphone-qkd-nature\0" + str(seed).encode() + b"\0" + label).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))
