"""Counters and recent figures of the simulated QKD link, as reported in ``status_extension``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any

_EWMA = 0.2


@dataclass
class LinkStats:
    """Mutable tally owned by one KME (source computes it, sink mirrors the source's copy)."""

    blocks_ok: int = 0
    blocks_aborted: int = 0
    secret_bits: int = 0
    simulated_seconds: float = 0.0
    last_qber: float | None = None
    qber_ewma: float | None = None
    key_rate_bps: float = 0.0  # recent secret key rate (EWMA over blocks)
    eavesdropper_alarm: bool = False
    last_abort_reason: str | None = None
    consecutive_aborts: int = 0

    def record(
        self,
        *,
        aborted: bool,
        reason: str | None,
        qber: float,
        bits: int,
        seconds: float,
        eve_alarm: bool,
    ) -> None:
        self.simulated_seconds += seconds
        if qber == qber:  # skip NaN (no sifted bits)
            self.last_qber = qber
            self.qber_ewma = qber if self.qber_ewma is None else (
                (1 - _EWMA) * self.qber_ewma + _EWMA * qber
            )
        rate = bits / seconds if seconds > 0 else 0.0
        self.key_rate_bps = rate if self.blocks_ok + self.blocks_aborted == 0 else (
            (1 - _EWMA) * self.key_rate_bps + _EWMA * rate
        )
        if aborted:
            self.blocks_aborted += 1
            self.consecutive_aborts += 1
            self.last_abort_reason = reason or "aborted"
            self.eavesdropper_alarm = eve_alarm
        else:
            self.blocks_ok += 1
            self.secret_bits += bits
            self.consecutive_aborts = 0
            self.eavesdropper_alarm = False

    def extension(self) -> dict[str, Any]:
        """The ``status_extension`` object (under the key ``qkd_link``)."""
        d = asdict(self)
        for k in ("last_qber", "qber_ewma"):
            if d[k] is not None:
                d[k] = round(d[k], 6)
        d["key_rate_bps"] = round(self.key_rate_bps, 1)
        d["simulated_seconds"] = round(self.simulated_seconds, 6)
        return d

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json_obj(cls, raw: Any) -> LinkStats:
        """Strictly decode the peer's ``extension()`` copy; raises ValueError if malformed."""
        from keyserver.kms.peer import PeerProtocolError

        if not isinstance(raw, dict):
            raise PeerProtocolError("stats must be an object")
        out = cls()
        for f in fields(cls):
            if f.name not in raw:
                raise PeerProtocolError(f"stats.{f.name} missing")
            v = raw[f.name]
            cur = getattr(out, f.name)
            ok = (
                (isinstance(cur, bool) and isinstance(v, bool))
                or (isinstance(cur, int) and not isinstance(cur, bool)
                    and isinstance(v, int) and not isinstance(v, bool))
                or (f.name in ("last_qber", "qber_ewma") and (v is None or _num(v)))
                or (f.name == "last_abort_reason" and (v is None or isinstance(v, str)))
                or (isinstance(cur, float) and _num(v))
            )
            if not ok:
                raise PeerProtocolError(f"stats.{f.name} has the wrong type")
            setattr(out, f.name, v)
        return out

    @classmethod
    def from_json(cls, text: str | None) -> LinkStats:
        if not text:
            return cls()
        try:
            raw = json.loads(text)
        except ValueError:
            return cls()
        if not isinstance(raw, dict):
            return cls()
        names = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in raw.items() if k in names})
        except TypeError:
            return cls()


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)
