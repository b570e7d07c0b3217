"""Pinned peer identities: trust on first use; a changed identity is reported, never re-pinned."""

from __future__ import annotations

from pathlib import Path

import pytest

from qphone.config.pins import KnownPeers, KnownPeersError, PinStatus
from qphone.core.identity import Identity

BOB, MALLORY = Identity.generate().public, Identity.generate().public


def test_first_use_pins_then_matches_then_a_change_is_reported(tmp_path: Path) -> None:
    pins = KnownPeers(tmp_path / "peers.json")
    assert pins.pinned("bob") is None
    first = pins.check("bob", BOB)
    assert first.status is PinStatus.NEW and first.pinned is None
    assert pins.pinned("bob") == BOB
    assert pins.check("bob", BOB).status is PinStatus.MATCH
    changed = pins.check("bob", MALLORY)
    assert changed.status is PinStatus.CHANGED
    assert (changed.pinned, changed.fingerprint) == (BOB.fingerprint(), MALLORY.fingerprint())
    assert pins.pinned("bob") == BOB  # not re-pinned by check()
    pins.repin("bob", MALLORY)  # only on the user's word (--trust-new-identity)
    assert KnownPeers(tmp_path / "peers.json").pinned("bob") == MALLORY


def test_a_corrupt_file_names_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "peers.json"
    path.write_text('{"bob": {"fingerprint": "x", "identity": "zz"}}')
    with pytest.raises(KnownPeersError, match="fix or remove it"):
        KnownPeers(path).pinned("bob")
