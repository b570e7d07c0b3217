"""Syndrome-based LDPC error correction of a block of sifted key, frame by frame.

Alice discloses ``H x_A`` for each frame of ``n`` bits; Bob decodes the error pattern from the
syndrome difference with the estimated QBER as prior and flips those bits. Both then exchange a
short random-linear-hash tag per frame (``frame_tag_bits``) so that frames where BP did not
converge or converged to a wrong codeword are found and dropped by both. The leaked information is
the syndrome and tag bits of the kept frames (a dropped frame's disclosures only concern dropped
bits). The block-level verification hash that bounds the failure probability comes afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from keyserver.qkd.ldpc_codes import ParityCheckMatrix, random_code, syndrome_length
from keyserver.qkd.ldpc_decoder import SyndromeDecoder, make_decoder
from keyserver.qkd.privacyamplification import frame_tags

U8Array = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class ReconciliationResult:
    alice: U8Array  # Alice's bits of the kept frames
    bob: U8Array  # Bob's corrected bits of the kept frames (equal to alice unless BP mis-converged)
    frames: int
    frames_failed: int
    syndrome_bits_per_frame: int
    leaked_bits: int  # syndrome + frame-tag bits of the kept frames
    frames_miscorrected: int  # converged to a wrong word, caught by the frame tag
    corrected_errors: int  # bits Bob flipped in the kept frames
    mean_iterations: float


class LdpcReconciler:
    """Reconciles blocks with codes of length ``frame_bits``; codes are built once per rate."""

    def __init__(self, frame_bits: int, decoder: str = "layered", max_iterations: int = 30) -> None:
        self._n = frame_bits
        self._decoder_name = decoder
        self._max_iter = max_iterations
        self._codes: dict[int, tuple[ParityCheckMatrix, SyndromeDecoder]] = {}

    @property
    def frame_bits(self) -> int:
        return self._n

    def code_for(self, qber: float) -> tuple[ParityCheckMatrix, SyndromeDecoder]:
        m = syndrome_length(self._n, qber)
        if m not in self._codes:
            code = random_code(self._n, m)
            self._codes[m] = (code, make_decoder(self._decoder_name, code, self._max_iter))
        return self._codes[m]

    def reconcile(
        self, alice: U8Array, bob: U8Array, qber_estimate: float, tag_matrix: U8Array
    ) -> ReconciliationResult:
        """Correct Bob's bits towards Alice's; trailing bits that do not fill a frame are dropped.

        ``tag_matrix`` is a fresh random 0/1 matrix of shape (frame_bits, k) for the frame tags.
        """
        if alice.shape != bob.shape or alice.ndim != 1:
            raise ValueError("alice and bob must be 1-D arrays of equal length")
        frames = alice.shape[0] // self._n
        code, decoder = self.code_for(qber_estimate)
        if frames == 0:
            empty = np.zeros(0, dtype=np.uint8)
            return ReconciliationResult(empty, empty, 0, 0, code.m, 0, 0, 0, 0.0)
        xa = alice[: frames * self._n].reshape(frames, self._n)
        xb = bob[: frames * self._n].reshape(frames, self._n)
        syndrome_diff = code.syndromes(xa) ^ code.syndromes(xb)
        result = decoder.decode(syndrome_diff, qber_estimate)
        fixed = xb ^ result.errors
        tags_match = np.all(frame_tags(xa, tag_matrix) == frame_tags(fixed, tag_matrix), axis=1)
        keep = result.converged & tags_match
        corrected = fixed[keep]
        kept = int(keep.sum())
        return ReconciliationResult(
            alice=xa[keep].reshape(-1),
            bob=corrected.reshape(-1),
            frames=frames,
            frames_failed=frames - kept,
            syndrome_bits_per_frame=code.m,
            leaked_bits=kept * (code.m + tag_matrix.shape[1]),
            frames_miscorrected=int(np.count_nonzero(result.converged & ~tags_match)),
            corrected_errors=int(result.errors[keep].sum(dtype=np.int64)),
            mean_iterations=float(result.iterations.mean()),
        )
