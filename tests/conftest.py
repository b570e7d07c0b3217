"""Fixtures shared by every test directory: a keyserver pair, a PulseAudio null sink, free ports.

Helpers that are plain functions live in :mod:`tests.support`; the keyserver tests' own fixtures
are in :mod:`tests.support.kme_fixtures`.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qphone.demo.keyserverprocess import free_port as _free_port
from tests.support.keyserverdemo import keyserver_demo, wait_for_key
from tests.support.pulseaudio import PulseServer, start_pulse, stop_pulse


@pytest.fixture
def free_port() -> Callable[[], int]:
    """A function returning a TCP port on 127.0.0.1 that nobody listens on (call it per port)."""
    return _free_port


@pytest.fixture(scope="session")
def keyserver_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The directory of a running `qkd-keyserver demo` (KME A, KME B, BB84 link, profiles)
    that already holds key, one for the whole session (eight test modules call through it;
    one start and first block instead of eight, ~9 s each); tests copy its profiles with their
    own identities (private_profile) and never change the pair itself (no Eve, no kill: a test
    that needs that starts its own `keyserver_demo`)."""
    with keyserver_demo(tmp_path_factory.mktemp("kme") / "demo") as d:
        wait_for_key(d)
        yield d


@pytest.fixture(scope="module")
def pulse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PulseServer]:
    """A private PulseAudio daemon with a null sink; clients in this process are pointed at it."""
    if shutil.which("pulseaudio") is None:
        pytest.skip("pulseaudio is not installed (Debian package 'pulseaudio'; `make setup`)")
    if shutil.which("pactl") is None:
        pytest.skip("pactl is not installed (Debian package 'pulseaudio-utils'; `make setup`)")
    # a short path: unix socket paths are limited to 108 bytes
    root = Path(tmp_path_factory.mktemp("pulse"))
    server = start_pulse(root)
    try:
        with pytest.MonkeyPatch.context() as mp:
            for key, value in server.env.items():
                mp.setenv(key, value)
            yield server
    finally:
        stop_pulse(server)
