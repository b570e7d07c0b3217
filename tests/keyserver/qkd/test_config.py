"""The module config: strict validation; a seeded source is refused unless testing = true."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from keyserver.configfile import ConfigError
from keyserver.qkd.config import load_config
from tests.keyserver.qkd.modulesupport import make_pair


def _run(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keyserver.cli", "module", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_seeded_source_is_refused_without_testing(tmp_path: Path) -> None:
    pair = make_pair(tmp_path, testing=False, seed=3)
    with pytest.raises(ConfigError, match="testing = true"):
        load_config(pair.configs["transmitter"])
    out = _run(pair.configs["receiver"])
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "seed" in lines[0] and "testing = true" in lines[0]
    assert not (tmp_path / "data-receiver").exists()  # refused before any state was created


def test_unseeded_module_config_is_accepted_and_not_seeded(tmp_path: Path) -> None:
    pair = make_pair(tmp_path, testing=False, seed=None)
    cfg = load_config(pair.configs["transmitter"])
    assert not cfg.seeded and cfg.role == "transmitter"
    assert cfg.data_dir == tmp_path / "data-transmitter"
    assert cfg.synchronous == "NORMAL" and cfg.plan_cache is None  # physics, no cache: as before


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('role = "transmitter"', 'role = "sender"', "role must be"),
        ("[northbound]", "[northbound]\ncolour = 1", "unknown key 'colour'"),
        ("block_pulses = ", "bogus = 1\nblock_pulses = ", "unknown parameter 'bogus'"),
        ("distance_km = 10.0", "distance_km = -1.0", "distance_km must be >= 0"),
        ("key_size = 1024", "key_size = 1001", "multiple of 8"),
        ('address = "127.0.0.1:', 'address = "nowhere', "host:port"),
        ('role = "transmitter"', 'role = "transmitter"\nsynchronous = "SOMETIMES"', "synchronous"),
    ],
)
def test_bad_config_is_one_clear_line(tmp_path: Path, old: str, new: str, message: str) -> None:
    pair = make_pair(tmp_path)
    path = pair.configs["transmitter"]
    path.write_text(path.read_text().replace(old, new, 1))
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_short_initial_key_is_refused(tmp_path: Path) -> None:
    pair = make_pair(tmp_path)
    (tmp_path / "link.authkey").write_bytes(b"x" * 100)
    out = _run(pair.configs["transmitter"])
    assert out.returncode == 2 and "initial authentication key" in out.stderr
