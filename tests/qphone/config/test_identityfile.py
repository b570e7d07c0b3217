"""Identity files: created on first use (0600), reloaded unchanged, refused if others can read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qphone.config.identityfile import IdentityFileError, load_or_create_identity


def test_created_private_then_loaded(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "alice.identity"
    first, created = load_or_create_identity(path)
    assert created and path.stat().st_mode & 0o777 == 0o600
    again, created = load_or_create_identity(path)
    assert not created and again.public == first.public
    assert not path.with_suffix(".identity.tmp").exists()


def test_refused_when_others_can_read_it_or_it_is_not_an_identity(tmp_path: Path) -> None:
    path = tmp_path / "alice.identity"
    load_or_create_identity(path)
    os.chmod(path, 0o644)
    with pytest.raises(IdentityFileError, match="chmod 600"):
        load_or_create_identity(path)
    junk = tmp_path / "junk.identity"
    junk.write_bytes(b"not an identity")
    os.chmod(junk, 0o600)
    with pytest.raises(IdentityFileError, match="not a qphone identity file"):
        load_or_create_identity(junk)
