"""`qkd-keyserver demo` end to end (two KME processes, BB84 link, profiles) and config checks."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from keyserver.kms.config import ConfigError, load_config
from keyserver.network.demo import DemoOptions, kme_config_text
from keyserver.pki.certificates import ensure_demo_pki
from qphone.kmeclient import KmeClient
from qphone.profile import load_profile
from tests.support.kme_fixtures import free_port


@pytest.mark.slow
async def test_demo_runs_the_pair_and_writes_profiles(tmp_path: Path) -> None:
    pa, pb = free_port(), free_port()
    log = open(tmp_path / "demo.out", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "keyserver.cli",
            "demo",
            "--dir",
            str(tmp_path),
            "--port-a",
            str(pa),
            "--port-b",
            str(pb),
            "--seed",
            "9",
            "--max-key-count",
            "2000",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        while not (tmp_path / "demo.json").exists():
            assert proc.poll() is None, (tmp_path / "demo.out").read_text()
            assert time.monotonic() < deadline, "demo.json never appeared"
            time.sleep(0.1)
        info = json.loads((tmp_path / "demo.json").read_text())
        assert info["kmes"]["A"]["url"] == f"https://127.0.0.1:{pa}"
        assert info["saes"]["bob"]["kme"] == "KME-B"
        alice_p = load_profile(tmp_path / "alice.toml")
        bob_p = load_profile(tmp_path / "bob.toml")
        assert (alice_p.sae_id, alice_p.peer_sae_id) == ("alice", "bob")
        assert bob_p.kme_url == info["saes"]["bob"]["kme_url"]
        async with KmeClient.from_profile(alice_p) as alice, KmeClient.from_profile(bob_p) as bob:
            for _ in range(300):
                st = await alice.status("bob")
                if st.stored_key_count >= 8:
                    break
                await asyncio.sleep(0.1)
            assert st.link["blocks_ok"] >= 1 and 0 < st.link["last_qber"] < 0.11
            keys = await alice.enc_keys("bob", 2, 1024)
            assert await bob.dec_keys("alice", [k.key_id for k in keys]) == keys
        children = [info["kmes"][s]["pid"] for s in ("A", "B")]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        for pid in children:  # both KMEs stopped with the demo
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        assert not (tmp_path / "demo.json").exists()
        assert "kme_stopped" in (tmp_path / "kme-a.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def test_simulate_subcommand_prints_json() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "keyserver.cli",
            "simulate",
            "--distance-km",
            "10",
            "--pulses",
            "3e8",
            "--block-pulses",
            "3e8",
            "--seed",
            "1",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    report = json.loads(out)
    for key in (
        "gain",
        "qber",
        "sifted_bits",
        "secret_bits",
        "secret_bits_per_pulse",
        "theory_bits_per_pulse",
        "ec_efficiency",
        "aborted",
        "seconds",
    ):
        assert key in report
    assert report["aborted"] is False and report["sifted_bits"] > 0


def test_serve_config_is_validated(tmp_path: Path) -> None:
    pki = ensure_demo_pki(tmp_path)
    opts = DemoOptions(directory=tmp_path, seed=1)
    good = kme_config_text(opts, pki, "A", port=8441, peer_port=8442)
    (tmp_path / "a.toml").write_text(good)
    cfg = load_config(tmp_path / "a.toml")
    assert cfg.id == "KME-A" and cfg.peer.sae == ("bob",) and cfg.link.role == "source"
    assert cfg.link.seed == 1 and cfg.max_key_count == 100_000
    bad = {
        "port = 8441": ('port = "x"', "has the wrong type"),
        'role = "source"': ('role = "relay"', "role must be"),
        "key_size = 256": ("key_size = 100", "multiple of 8"),
        'local = ["alice"]': ('local = ["bob"]', "must all be distinct"),
        "[sae]": ("[sae]\ncolour = 1", "unknown key 'colour'"),
    }
    (tmp_path / "p.toml").write_text(good + "\n[link.params]\nmu = 0.5\np_z = 0.9\n")
    assert load_config(tmp_path / "p.toml").link.params == {"mu": 0.5, "p_z": 0.9}
    for extra, message in (("bogus = 1", "bogus"), ("mu = -1.0", r"\[link.params\]")):
        (tmp_path / "p.toml").write_text(good + f"\n[link.params]\n{extra}\n")
        with pytest.raises(ConfigError, match=message):
            load_config(tmp_path / "p.toml")
    for old, (new, message) in bad.items():
        (tmp_path / "bad.toml").write_text(good.replace(old, new, 1))
        with pytest.raises(ConfigError, match=message):
            load_config(tmp_path / "bad.toml")
    r = subprocess.run(
        [sys.executable, "-m", "keyserver.cli", "serve", "--config", str(tmp_path / "bad.toml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "unknown key 'colour'" in r.stderr
