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
