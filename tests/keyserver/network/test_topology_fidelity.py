"""Link fidelity in the topology file, its override, and what the plan writes for each module."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from keyserver.configfile import ConfigError
from keyserver.network.plan import Options, make_plan, write_configs
from keyserver.qkd.config import Fidelity, load_config, module_config_files
from keyserver.topology import (
    load_topology,
    parse_topology,
    with_fidelity,
)


def _doc(**top: Any) -> dict[str, Any]:
    return {
        **top,
        "nodes": [{"id": "a"}, {"id": "b"}, {"id": "c"}],
        "links": [
            {"a": "a", "b": "b", "distance_km": 10.0},
            {"a": "b", "b": "c", "distance_km": 20.0, "fidelity": "physics"},
        ],
    }


def test_a_file_that_says_nothing_is_physics() -> None:
    topo = parse_topology(_doc())
    assert [link.fidelity for link in topo.links] == ["physics", "physics"]
    for name in ("beijing-hefei", "hefei-metro", "pair"):
        assert {link.fidelity for link in load_topology(name).links} == {"physics"}


def test_network_default_and_per_link_fidelity() -> None:
    topo = parse_topology(_doc(fidelity="emulated"))
    assert [link.fidelity for link in topo.links] == ["emulated", "physics"]
    doc = _doc()
    doc["links"][0]["fidelity"] = "emulated"
    assert [link.fidelity for link in parse_topology(doc).links] == ["emulated", "physics"]


def test_override_sets_every_link() -> None:
    topo = with_fidelity(parse_topology(_doc(fidelity="emulated")), "physics")
    assert {link.fidelity for link in topo.links} == {"physics"}
    with pytest.raises(ConfigError):
        with_fidelity(topo, "fast")


@pytest.mark.parametrize("where", ["top", "link"])
def test_a_wrong_fidelity_is_one_clear_line(where: str) -> None:
    doc = _doc(fidelity="quantum") if where == "top" else _doc()
    if where == "link":
        doc["links"][0]["fidelity"] = 3
    with pytest.raises(ConfigError, match='fidelity must be "physics" or "emulated"') as e:
        parse_topology(doc)
    assert "\n" not in str(e.value)


def test_plan_writes_each_modules_fidelity_and_a_private_channel_key(tmp_path: Path) -> None:
    doc = _doc(fidelity="emulated")
    topo = parse_topology(doc)
    plan = make_plan(tmp_path / "net", topo, Options())
    write_configs(plan)
    for m in plan.modules.values():
        cfg = load_config(m.config)
        want = Fidelity(topo.link(m.link).fidelity)
        assert cfg.fidelity is want
        key = cfg.channel_key
        assert key == plan.directory / "links" / f"{m.link}.channelkey"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_bytes()) == 32
    keys = {p.read_bytes() for p in (plan.directory / "links").glob("*.channelkey")}
    assert len(keys) == len(topo.links)  # one key per link
    forced = make_plan(tmp_path / "net2", topo, Options(fidelity="physics"))
    assert {link.fidelity for link in forced.topology.links} == {"physics"}


def test_site_hosts_group_a_sites_emulated_modules_into_one_process(tmp_path: Path) -> None:
    doc = _doc(fidelity="emulated")  # a-b emulated, b-c physics: b holds one emulated module
    doc["nodes"].append({"id": "d"})
    doc["links"].append({"a": "b", "b": "d", "distance_km": 5.0})
    topo = parse_topology(doc)
    plain = make_plan(tmp_path / "p", topo, Options())
    assert plain.site_hosts() == {} and len(plain.processes()) == 6 + 4
    plan = make_plan(tmp_path / "n", topo, Options(site_hosts=True))
    hosts = plan.site_hosts()
    assert list(hosts) == ["b"]  # b: rx of a-b and tx of b-d (its physics module stays apart)
    assert {m.link for m in hosts["b"]} == {"a-b", "b-d"}
    names = [p[0] for p in plan.processes()]
    assert "modules@b" in names and "QKD-b-c-tx" in names and "QKD-a-b-rx" not in names
    assert len(names) == len(set(names)) == 4 + 1 + 4
    assert plan.process_of("QKD-a-b-rx") == "modules@b" and plan.process_of("a") == "a"
    write_configs(plan)
    host_file = plan.site_host_files("b")[0]
    files = module_config_files(host_file)
    assert sorted(f.name for f in files) == ["QKD-a-b-rx.toml", "QKD-b-d-tx.toml"]
    assert all(load_config(f).fidelity is Fidelity.EMULATED for f in files)
    module = plan.modules["QKD-b-c-tx"].config
    assert module_config_files(module) == [module]
    host_file.write_text('[site_host]\nmodules = "x.toml"\n')
    with pytest.raises(ConfigError, match="a site host file has only"):
        module_config_files(host_file)
