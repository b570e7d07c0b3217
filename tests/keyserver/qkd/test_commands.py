"""``qkd-keyserver simulate`` as a user runs it: one JSON object with the bounds and the key."""

from __future__ import annotations

import json
import subprocess
import sys


def _simulate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keyserver.cli", "simulate", *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_simulate_prints_the_bounds_the_epsilons_and_the_key_produced() -> None:
    done = _simulate("--distance-km", "10", "--block-pulses", "3e8", "--seed", "1", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["aborted"] is False and report["sifted_bits"] > 0
    assert report["eps_sec"] <= 1e-10 and report["eps_cor"] <= 1e-15
    assert 0 < report["finite_key_bits_per_pulse"] <= report["asymptotic_bits_per_pulse"]
    assert report["secret_bits"] > 0
    assert 1.0 < report["ec_efficiency"] < 1.3


def test_simulate_refuses_a_bad_value_in_one_line() -> None:
    done = _simulate("--distance-km", "-5", "--json")
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1
