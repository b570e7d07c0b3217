"""A real ``qkd-keyserver demo`` pair for call tests, and private copies of its profiles."""

from __future__ import annotations

import asyncio
import contextlib
import tomllib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from qphone.config.profile import Profile, load_profile
from qphone.demo.keyserverprocess import running_keyserver
from qphone.kmeclient import KmeClient, KmeError


@contextlib.contextmanager
def keyserver_demo(directory: Path, *extra: str, timeout: float = 240.0) -> Iterator[Path]:
    """Run `qkd-keyserver demo` (two KME processes + the simulated link) until the block ends."""
    with running_keyserver(directory, ["--seed", "7", *extra], timeout) as d:
        yield d


def wait_for_key(demo: Path, timeout: float = 180.0) -> None:
    """Return once the demo pair's KME holds key for alice -> bob (its link's first block can
    take much longer than the demo takes to start); RuntimeError after ``timeout``."""

    async def poll() -> None:
        async with KmeClient.from_profile(load_profile(demo / "alice.toml")) as kme:
            deadline = asyncio.get_running_loop().time() + timeout
            while asyncio.get_running_loop().time() < deadline:
                with contextlib.suppress(KmeError):
                    if (await kme.status("bob")).stored_key_count > 0:
                        return
                await asyncio.sleep(0.5)
        raise RuntimeError(f"the keyserver demo in {demo} delivered no key in {timeout:g} s")

    asyncio.run(poll())


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
