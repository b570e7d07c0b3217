"""QKD key material as the core sees it: key IDs and bytes, never where they came from.

The core never talks to a KME. The initiator's adapter fetches keys (ETSI 014 enc_keys) and hands
them in; the responder's core asks for key IDs with a :class:`~qphone.core.events.ResolveQkdKeys`
event and its adapter answers with the material resolved through its own KME (dec_keys).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field


@dataclass(frozen=True, repr=False)
class QkdKey:
    """One key delivered by a KME: its ETSI 014 key ID and its bytes."""

    key_id: uuid.UUID
    material: bytes = field(repr=False)

    @property
    def bits(self) -> int:
        return 8 * len(self.material)

    def __repr__(self) -> str:  # never print key material
        return f"QkdKey({self.key_id}, {self.bits} bits)"
