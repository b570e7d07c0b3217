"""Counts every QKD bit a call takes and what became of it, by purpose."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class KeyAccounting:
    """QKD bits of one endpoint's session.

    ``handshake`` and ``epoch`` are shared by both directions (both ends count them); ``pad`` and
    ``mac`` are this endpoint's sending direction (payload pad, and per-frame tag pad plus the
    session hash key); ``received`` is the peer's sending direction as far as this side knows it
    was used (up to the last frame received, or the last position the peer reported: the pad of
    frames lost after that counts as erased here).  ``fetched`` is every QKD bit handed to the
    session (from the KME); ``erased_unused`` is what was fetched ahead of need and erased unused
    when the call ended.  So ``fetched == used + erased_unused`` once the session is closed.
    """

    handshake: int = 0
    epoch: int = 0
    pad: int = 0
    mac: int = 0
    received: int = 0
    fetched: int = 0
    erased_unused: int = 0

    @property
    def consumed(self) -> int:
        """What this side's own sending (and the shared keys) used."""
        return self.handshake + self.epoch + self.pad + self.mac

    @property
    def used(self) -> int:
        """Everything of ``fetched`` that protected something, in either direction."""
        return self.consumed + self.received

    def as_dict(self) -> dict[str, int]:
        out = asdict(self)
        out["consumed"] = self.consumed
        out["used"] = self.used
        return out
