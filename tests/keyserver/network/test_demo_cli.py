"""`qkd-keyserver demo` (the pair topology through the launcher): outputs, lock, ports, signals."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from keyserver.ports import free_ports
from qphone.config.profile import load_profile
from qphone.kmeclient import KmeClient

pytestmark = pytest.mark.timeout(180)


def demo(directory: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "keyserver.cli", "demo", "--dir", str(directory), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_demo_outputs_lock_ports_and_clean_stop(tmp_path: Path) -> None:
    pa, pb = free_ports(2, set())
    d = tmp_path / "demo"
    proc = demo(d, "--port-a", str(pa), "--port-b", str(pb), "--seed", "7")
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        ready = json.loads(line)
        assert ready["event"] == "demo_ready"
        assert ready["kme_a"] == f"https://127.0.0.1:{pa}"
        info = json.loads((d / "demo.json").read_text())
        assert info["kmes"]["A"]["id"] == "KME-A" and info["kmes"]["B"]["url"].endswith(str(pb))
        assert info["saes"]["alice"]["profile"] == str(d / "alice.toml")
        assert info["saes"]["bob"]["kme"] == "KME-B"
        alice, bob = load_profile(d / "alice.toml"), load_profile(d / "bob.toml")
        assert (alice.sae_id, alice.peer_sae_id, bob.peer_sae_id) == ("alice", "bob", "alice")

        async def keys() -> None:
            async with KmeClient.from_profile(alice) as a, KmeClient.from_profile(bob) as b:
                for _ in range(100):  # the QKD link's first block
                    if (await a.status("bob")).stored_key_count > 10:
                        break
                    await asyncio.sleep(0.5)
                got = await a.enc_keys("bob", 2, 512)
                assert await b.dec_keys("alice", [k.key_id for k in got]) == got
                st = await a.status("bob")
                assert st.status_extension is not None
                assert st.status_extension["route"]["nodes"] == ["KME-A", "KME-B"]
                assert st.link["eavesdropper_alarm"] is False

        asyncio.run(keys())
        # a second demo on the same directory refuses and touches nothing
        before = (d / "demo.json").read_bytes()
        configs = {p: p.read_bytes() for p in (d / "nodes").glob("*.toml")}
        second = demo(d, "--port-a", str(pa + 0), "--port-b", str(pb))
        out, err = second.communicate(timeout=60)
        assert second.returncode == 1 and "is in use by a running network" in err, err
        assert (d / "demo.json").read_bytes() == before
        assert {p: p.read_bytes() for p in (d / "nodes").glob("*.toml")} == configs
        # another directory on the same ports: the port is named
        third = demo(tmp_path / "other", "--port-a", str(pa), "--port-b", str(pb))
        out, err = third.communicate(timeout=60)
        assert third.returncode == 1 and f"port {pa} on 127.0.0.1 is in use" in err, err
        assert "demo_ready" not in out
        # SIGTERM: everything stops, exit 0, demo.json gone
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert not (d / "demo.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_demo_bad_flags_exit_2(tmp_path: Path) -> None:
    for flags, message in (
        (["--eve-fraction", "1.5"], "--eve-fraction must be within 0..1"),
        (["--max-key-count", "0"], "--max-key-count must be >= 1"),
    ):
        p = demo(tmp_path / "x", *flags)
        out, err = p.communicate(timeout=60)
        assert p.returncode == 2 and message in err and not out
    assert not (tmp_path / "x").exists()


def test_network_rejects_unknown_topology_and_links(tmp_path: Path) -> None:
    for args, message in (
        (["--topology", "atlantis"], "no topology named 'atlantis'"),
        (["--topology", "pair", "--eve", "X-Y=0.5"], "--eve names link 'X-Y'"),
    ):
        p = subprocess.run(
            [sys.executable, "-m", "keyserver.cli", "network", *args, "--dir", str(tmp_path / "n")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert p.returncode == 2 and message in p.stderr, p.stderr
    assert not (tmp_path / "n").exists()
