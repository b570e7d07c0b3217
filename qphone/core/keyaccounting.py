"""Counts every QKD bit a call consumes, by purpose."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class KeyAccounting:
    """QKD bits consumed by one endpoint.

    ``handshake`` and ``epoch`` are shared by both directions (both ends count them); ``pad`` and
    ``mac`` are this endpoint's sending direction (payload pad, and per-frame tag pad plus the
    session hash key). ``fetched`` is everything taken from the KME; ``erased_unused`` is key
    that was fetched ahead of need and erased unused when the call ended.
    """

    handshake: int = 0
    epoch: int = 0
    pad: int = 0
    mac: int = 0
    fetched: int = 0
    erased_unused: int = 0

    @property
    def consumed(self) -> int:
        return self.handshake + self.epoch + self.pad + self.mac

    def as_dict(self) -> dict[str, int]:
        out = asdict(self)
        out["consumed"] = self.consumed
        return out
