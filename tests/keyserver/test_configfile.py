"""keyserver's one config error and one TOML loader, behind every file it reads a config from."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from keyserver import configfile, topology
from keyserver.configfile import ConfigError, load_toml, parse_toml
from keyserver.kms import nodeconfig
from keyserver.qkd import config as moduleconfig

LOADERS: list[Callable[[Path], Any]] = [
    moduleconfig.load_config,
    moduleconfig.module_config_files,
    nodeconfig.load_node_config,
    lambda p: topology.load_topology(str(p)),
]


def test_one_config_error_class_in_the_package() -> None:
    assert moduleconfig.ConfigError is nodeconfig.ConfigError is configfile.ConfigError
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize("load", LOADERS)
def test_every_loader_names_an_unreadable_file(load: Callable[[Path], Any], tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match=r"^cannot read \w+ .*missing\.toml: No such file"):
        load(missing)


@pytest.mark.parametrize("load", LOADERS)
def test_every_loader_names_a_file_that_is_not_toml(
    load: Callable[[Path], Any], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[node\nid = 1\n")
    with pytest.raises(ConfigError, match=r"bad\.toml is not valid TOML: ") as e:
        load(bad)
    assert "\n" not in str(e.value)


def test_a_topology_mistake_is_the_same_config_error() -> None:
    with pytest.raises(ConfigError, match="at least two"):
        topology.parse_topology({"nodes": [{"id": "a"}], "links": []})


def test_load_toml_reads_a_document(tmp_path: Path) -> None:
    f = tmp_path / "ok.toml"
    f.write_text('[node]\nid = "a"\n')
    assert load_toml(f) == {"node": {"id": "a"}}
    assert parse_toml("x = 1", "inline") == {"x": 1}
    with pytest.raises(ConfigError, match=r"^topology t is not valid TOML"):
        parse_toml("x =", "topology t")
