"""Pinned peer identities: trust on first use, loud warning when a known peer's key changes."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from qphone.core.identity import PublicIdentity


class PinStatus(Enum):
    NEW = "new"  # first call with this peer: pinned now (trust on first use)
    MATCH = "match"  # the pinned identity
    CHANGED = "changed"  # a different identity than the one pinned: possible attack


@dataclass(frozen=True)
class PinResult:
    status: PinStatus
    fingerprint: str
    pinned: str | None


class KnownPeers:
    """A JSON file mapping peer names (SAE IDs) to identity fingerprints."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _load(self) -> dict[str, str]:
        if not self.path.exists():
            return {}
        data = json.loads(self.path.read_text())
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()
        ):
            raise ValueError(f"{self.path} is not a known-peers file")
        return data

    def check(self, peer: str, identity: PublicIdentity) -> PinResult:
        """Compare with the pin; pin on first use. A changed identity is NOT re-pinned."""
        pins = self._load()
        fp = identity.fingerprint()
        old = pins.get(peer)
        if old is None:
            pins[peer] = fp
            self._save(pins)
            return PinResult(PinStatus.NEW, fp, None)
        return PinResult(PinStatus.MATCH if old == fp else PinStatus.CHANGED, fp, old)

    def repin(self, peer: str, identity: PublicIdentity) -> None:
        pins = self._load()
        pins[peer] = identity.fingerprint()
        self._save(pins)

    def _save(self, pins: dict[str, str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(pins, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, self.path)
