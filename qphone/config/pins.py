"""Pinned peer identities: trust on first use, loud failure when a known peer's key changes."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from qphone.core.errors import MalformedMessage
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


class KnownPeersError(ValueError):
    pass


class KnownPeers:
    """A JSON file: peer name (SAE ID) -> {"fingerprint": ..., "identity": hex public keys}."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _load(self) -> dict[str, dict[str, str]]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
            if not isinstance(data, dict):
                raise ValueError("not an object")
            for entry in data.values():
                PublicIdentity.decode(bytes.fromhex(entry["identity"]))
        except (ValueError, KeyError, TypeError, MalformedMessage) as exc:
            raise KnownPeersError(
                f"{self.path} is not a valid known-peers file ({exc}); fix or remove it"
            ) from exc
        return data

    def pinned(self, peer: str) -> PublicIdentity | None:
        entry = self._load().get(peer)
        return PublicIdentity.decode(bytes.fromhex(entry["identity"])) if entry else None

    def check(self, peer: str, identity: PublicIdentity) -> PinResult:
        """Compare with the pin; pin on first use. A changed identity is NOT re-pinned."""
        pins = self._load()
        fp = identity.fingerprint()
        old = pins.get(peer)
        if old is None:
            self.repin(peer, identity)
            return PinResult(PinStatus.NEW, fp, None)
        same = old["identity"] == identity.encode().hex()
        return PinResult(PinStatus.MATCH if same else PinStatus.CHANGED, fp, old["fingerprint"])

    def repin(self, peer: str, identity: PublicIdentity) -> None:
        pins = self._load()
        pins[peer] = {"fingerprint": identity.fingerprint(), "identity": identity.encode().hex()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(pins, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, self.path)
