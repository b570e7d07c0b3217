"""Banner commands name a script that runs when pasted (the venv is not on the PATH)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from keyserver.consolescript import script_command


@pytest.mark.parametrize("name", ["qphone", "qkd-keyserver"])
def test_the_command_runs_from_the_current_directory(name: str) -> None:
    command = script_command(name)
    assert command != name  # installed next to this Python: named by its path
    env = {k: v for k, v in os.environ.items() if k != "PATH"} | {"PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [command, "--help"], capture_output=True, text=True, timeout=60, env=env, shell=False
    )
    assert out.returncode == 0 and "usage:" in out.stdout, out.stderr


def test_a_script_under_the_current_directory_is_named_relative_to_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    venv_bin = Path(sys.executable).parent
    monkeypatch.chdir(venv_bin.parent.parent)
    assert script_command("qphone") == str(Path(venv_bin.parent.name) / "bin" / "qphone")
    monkeypatch.chdir("/")
    assert script_command("qphone") == str(venv_bin.absolute() / "qphone")
    assert script_command("no-such-script") == "no-such-script"


def test_the_demo_banner_names_qphone_by_its_path(tmp_path: Path) -> None:
    """`qkd-keyserver demo`'s banner: its call commands run when pasted from the checkout."""
    from keyserver.network.demo import DemoOptions, _banner

    lines = _banner(None, tmp_path / "demo.json", DemoOptions(directory=tmp_path))  # type: ignore[arg-type]
    calls = [line.split(":", 1)[-1].strip() for line in lines if " answer --listen " in line]
    calls += [line.strip() for line in lines if " call 127.0.0.1:7000 " in line]
    assert len(calls) == 2
    assert all(c.startswith(script_command("qphone") + " ") for c in calls), calls
