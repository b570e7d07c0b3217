"""Identity files on disk: created on first use, private (0600), written atomically."""

from __future__ import annotations

import os
from pathlib import Path

from qphone.core.errors import MalformedMessage
from qphone.core.identity import Identity


class IdentityFileError(Exception):
    pass


def load_or_create_identity(path: str | Path) -> tuple[Identity, bool]:
    """Return (identity, created). Creates a new hybrid identity if the file does not exist."""
    path = Path(path)
    if path.exists():
        mode = path.stat().st_mode & 0o077
        if mode:
            raise IdentityFileError(
                f"identity file {path} is readable by others (mode {oct(path.stat().st_mode)}); "
                f"fix with: chmod 600 {path}"
            )
        try:
            return Identity.from_bytes(path.read_bytes()), False
        except MalformedMessage as exc:
            raise IdentityFileError(
                f"{path} is not a qphone identity file ({exc}); move it away to create a new one"
            ) from exc
    identity = Identity.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, identity.to_bytes())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return identity, True
