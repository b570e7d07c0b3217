"""The key of keyserver's ETSI 014 boundaries: a key ID and its material, frozen and erasable.

One shape for one idea wherever a key crosses a boundary between keyserver's layers: a QKD
module's northbound API hands its node ``Key``s, the node's module client
(``keyserver.kms.moduleclient``) returns them, the node's store holds them for the slave SAE,
and the ETSI 014 key container (``keyserver.etsi014.messages``) is built from and parsed into
them. Concepts that are not such a key keep their own names: a link's key stream is cut into
``Block``s (link key with an owner and a stream position, ``keyserver.kms.linkstream``), and
qphone derives its epoch and frame keys from what it is delivered (``qphone.core``).

The material is a ``bytearray`` so that whoever retires a key can overwrite it in place
(:meth:`Key.erase`); as everywhere in Python this is best effort (a ``bytes`` copy handed to a
library, e.g. base64 or SQLite, is freed by the allocator, not wiped), docs/crypto.md.
"""

from __future__ import annotations

import hmac
import uuid
from dataclasses import dataclass, field


@dataclass(frozen=True, eq=False, repr=False)
class Key:
    """One key: its ETSI 014 ``key_ID`` and its bytes (never printed; compared in constant
    time). Build it with :meth:`of` from any bytes-like value (the material is copied)."""

    key_id: uuid.UUID
    material: bytearray = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.key_id, uuid.UUID):
            raise TypeError("key_id must be a uuid.UUID")
        if not isinstance(self.material, bytearray):
            raise TypeError("material must be a bytearray (use Key.of to copy bytes)")

    @classmethod
    def of(cls, key_id: uuid.UUID, material: bytes | bytearray | memoryview) -> Key:
        return cls(key_id, bytearray(material))

    @property
    def bits(self) -> int:
        return 8 * len(self.material)

    def erase(self) -> None:
        """Overwrite the material with zeros, in place (idempotent)."""
        self.material[:] = bytes(len(self.material))

    @property
    def erased(self) -> bool:
        return not any(self.material)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Key):
            return NotImplemented
        return self.key_id == other.key_id and hmac.compare_digest(self.material, other.material)

    def __hash__(self) -> int:
        return hash(self.key_id)

    def __repr__(self) -> str:  # never print key material
        return f"Key({self.key_id}, {self.bits} bits)"
