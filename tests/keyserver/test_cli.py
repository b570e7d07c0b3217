"""``qkd-keyserver --help`` is complete: every subcommand (nested ones too) has a description,
every option and argument help text, and no command is there twice under two names."""

from __future__ import annotations

from keyserver.cli import build_parser
from keyserver.qkd.simulatetable import simulation_table
from tests.support.clihelp import help_gaps, subcommands


def test_every_subcommand_and_option_has_help() -> None:
    found = {" ".join(path): help_gaps(p) for path, p in subcommands(build_parser())}
    assert {"demo", "network status", "network eve", "bench link", "simulate"} <= set(found)
    assert {path: gaps for path, gaps in found.items() if gaps} == {}


def test_bench_link_is_there_once() -> None:
    names = {" ".join(path) for path, _ in subcommands(build_parser())}
    assert "bench link" in names and "bench-link" not in names


def test_simulate_prints_a_table_not_a_dict() -> None:
    lines = simulation_table(
        {"distance_km": 10, "aborted": False, "reason": None, "qber": 0.0330951234,
         "protocol": {"mu": 0.4187, "p_z": 0.881}}
    )  # fmt: skip
    assert lines[0].split() == ["distance", "km", "10"]
    assert lines[1].endswith(" no") and lines[2].endswith(" -") and lines[3].endswith(" 0.0330951")
    assert lines[4] == "protocol:" and lines[5].startswith("  mu ") and lines[5].endswith("0.4187")
    assert not any("{" in line for line in lines)


def test_simulate_json_is_the_json_object_alone() -> None:
    """stdout parses as one JSON object; the seeded-source notice goes to stderr."""
    import json
    import subprocess

    from tests.support.paths import BIN

    out = subprocess.run(
        [str(BIN / "qkd-keyserver"), "simulate", "--block-pulses", "1e6", "--blocks", "1",
         "--seed", "1", "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["blocks"] == 1 and "seeded source" in out.stderr
