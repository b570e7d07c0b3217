"""What a module's status extension reports about its link, kept across restarts."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from keyserver.qkd.blocks import BlockStats
from keyserver.qkd.messages import AbortReason

ALARM_WINDOW = 3


@dataclass
class LinkStatus:
    """What the status extension reports (persisted in the store's meta table)."""

    blocks_ok: int = 0
    blocks_aborted: int = 0
    last_abort_reason: str | None = None
    qber: float | None = None
    qber_ewma: float | None = None
    secret_bits_total: int = 0
    recent: list[tuple[float, int, bool, str | None]] = field(default_factory=list)

    def record(self, stats: BlockStats, seconds: float) -> None:
        if stats.aborted:
            self.blocks_aborted += 1
            self.last_abort_reason = stats.reason.label if stats.reason else "protocol_error"
        else:
            self.blocks_ok += 1
            self.secret_bits_total += stats.secret_bits
        q = stats.qber
        if q == q:  # not NaN
            self.qber = q
            self.qber_ewma = q if self.qber_ewma is None else 0.8 * self.qber_ewma + 0.2 * q
        reason = stats.reason.label if stats.reason else None
        self.recent.append((seconds, stats.key_bits_delivered, stats.aborted, reason))
        self.recent = self.recent[-16:]

    @property
    def key_rate_bps(self) -> float:
        secs = sum(r[0] for r in self.recent)
        return sum(r[1] for r in self.recent) / secs if secs > 0 else 0.0

    @property
    def eavesdropper_alarm(self) -> bool:
        last = self.recent[-ALARM_WINDOW:]
        eve = {r.label for r in AbortReason if r.eavesdropper}
        return bool(last) and any(r[2] and r[3] in eve for r in last) and last[-1][2]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj: Any) -> LinkStatus:
        if not isinstance(obj, dict):
            return cls()
        try:
            out = cls(**obj)
            out.recent = [tuple(r) for r in out.recent]  # type: ignore[misc]
            return out
        except TypeError:
            return cls()
