"""Epoch key schedule: a one-way chain that mixes in one fresh QKD key block per epoch.

``chain_0`` comes from the handshake. For epoch e >= 1::

    chain_e = HKDF-Extract(salt=chain_{e-1}, IKM=qkd_block_e || "qphone/1 epoch" || e)
    base_{e,dir} = HKDF-Expand(chain_e, "qphone/1 epoch key" || dir || e, 32)

``chain_{e-1}`` is erased as soon as ``chain_e`` exists, so later state cannot be run backwards
(forward secrecy), and a leaked ``chain_e`` or epoch key says nothing about ``chain_{e+1}``
once a fresh QKD block is mixed in (the block is the HKDF input keying material).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from qphone.core.kdf import erase, hkdf_expand, hkdf_extract


class Direction(IntEnum):
    I2R = 0  # initiator -> responder
    R2I = 1  # responder -> initiator


@dataclass(frozen=True, repr=False)
class EpochKeys:
    epoch: int
    i2r: bytes = field(repr=False)
    r2i: bytes = field(repr=False)

    def for_direction(self, direction: Direction) -> bytes:
        return self.i2r if direction is Direction.I2R else self.r2i


def _base_key(chain: bytes, direction: Direction, epoch: int) -> bytes:
    info = b"qphone/1 epoch key" + bytes((direction,)) + epoch.to_bytes(8, "big")
    return hkdf_expand(chain, info)


class KeySchedule:
    def __init__(self, chain0: bytearray) -> None:
        self._chain = bytearray(chain0)
        erase(chain0)
        self._epoch = 0

    @property
    def epoch(self) -> int:
        """The newest epoch derived so far."""
        return self._epoch

    def epoch0(self) -> EpochKeys:
        if self._epoch != 0:
            raise RuntimeError("epoch 0 keys are gone once the chain has advanced")
        return self._keys()

    def _keys(self) -> EpochKeys:
        chain = bytes(self._chain)
        return EpochKeys(
            self._epoch,
            _base_key(chain, Direction.I2R, self._epoch),
            _base_key(chain, Direction.R2I, self._epoch),
        )

    def advance(self, qkd_block: bytes) -> EpochKeys:
        """Mix one fresh QKD block into the chain; return the keys of the new epoch."""
        if len(qkd_block) < 16:
            raise ValueError("a QKD block for the key schedule must hold at least 128 bits")
        if self._epoch + 1 >= 1 << 31:
            raise ValueError("epoch counter exhausted")
        epoch = self._epoch + 1
        new = hkdf_extract(
            bytes(self._chain), qkd_block + b"qphone/1 epoch" + epoch.to_bytes(8, "big")
        )
        erase(self._chain)
        self._chain = bytearray(new)
        self._epoch = epoch
        return self._keys()

    def close(self) -> None:
        erase(self._chain)
