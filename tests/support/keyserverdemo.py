"""A real ``qkd-keyserver demo`` pair for call tests, and private copies of its profiles."""

from __future__ import annotations

import contextlib
import tomllib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from qphone.config.profile import Profile, load_profile
from qphone.demo.keyserverprocess import running_keyserver


@contextlib.contextmanager
def keyserver_demo(directory: Path, *extra: str, timeout: float = 240.0) -> Iterator[Path]:
    """Run `qkd-keyserver demo` (two KME processes + the simulated link) until the block ends."""
    with running_keyserver(directory, ["--seed", "7", *extra], timeout) as d:
        yield d


def private_profile(demo: Path, name: str, tmp: Path) -> Path:
    """A copy of the demo's profile for ``name`` with its own identity and pin files."""
    text = (demo / f"{name}.toml").read_text()
    identity = tomllib.loads(text)["identity"]
    text = text.replace(f'"{identity["file"]}"', f'"{tmp / f"{name}.identity"}"')
    text = text.replace(f'"{identity["known_peers"]}"', f'"{tmp / f"{name}.known_peers.json"}"')
    out = tmp / f"{name}.toml"
    out.write_text(text)
    return out


def private_profiles(demo: Path, tmp: Path) -> tuple[Profile, Profile]:
    """The demo's alice and bob profiles with fresh identities and pins in ``tmp``, same KMEs."""
    a, b = load_profile(demo / "alice.toml"), load_profile(demo / "bob.toml")
    return (
        replace(a, identity_file=tmp / "a.id", known_peers=tmp / "a.peers.json"),
        replace(b, identity_file=tmp / "b.id", known_peers=tmp / "b.peers.json"),
    )
