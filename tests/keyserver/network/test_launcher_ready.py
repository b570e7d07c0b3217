"""The launcher says when a network is ready for calls, and leaves nothing behind on SIGTERM.

``qkd-keyserver network`` as a user starts it (a process of its own, stdout not a terminal), on
a three-site chain of emulated links with short QKD blocks: it announces ``network_ready``
when the processes answer, then ``ready_for_calls`` once a key can be relayed between the two
farthest SAEs; that key is really there (the master SAE gets one, the slave the same); a node
SIGKILLed while the network runs is started again and the route carries keys again; SIGTERM
to the launcher stops every process it started (its zygotes and their children included).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from keyserver.network.launcher import CallPair, Readiness, farthest_saes, fit, progress_line
from keyserver.pki.tls import client_context
from keyserver.topology import parse_topology

pytestmark = pytest.mark.timeout(120)

CHAIN = """
name = "chain3"
fidelity = "emulated"
[defaults.params]
block_pulses = 300000000
[[nodes]]
id = "west"
[[nodes]]
id = "middle"
[[nodes]]
id = "east"
[[links]]
a = "west"
b = "middle"
distance_km = 20
[[links]]
a = "middle"
b = "east"
distance_km = 25
[[saes]]
id = "carol"
node = "middle"
[[saes]]
id = "alice"
node = "west"
[[saes]]
id = "bob"
node = "east"
"""


def _descendants(pid: int) -> set[int]:
    """Every process whose parent chain leads to `pid`."""
    parents: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    parents[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        found.update(kids)
        todo += kids
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _events(
    stream: IO[str] | None, want: str, limit: float, *, other_lines: bool = False
) -> list[dict[str, Any]]:
    """The JSON events of `stream` (stdout: nothing else; stderr, `other_lines`: lines that are
    not JSON skipped) up to and including the first `want` event."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + limit
    assert stream is not None
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        if other_lines and not line.startswith("{"):
            continue
        ev = json.loads(line)
        got.append(ev)
        if ev.get("event") == want:
            return got
    raise AssertionError(f"no {want} event; got {got}")


def test_ready_for_calls_line_and_sigterm_leaves_no_process(tmp_path: Path) -> None:
    topo_file = tmp_path / "chain3.toml"
    topo_file.write_text(CHAIN)
    d = tmp_path / "net"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "keyserver.cli",
            "network",
            "--topology",
            str(topo_file),
            "--dir",
            str(d),
            "--seed",
            "3",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        first = _events(proc.stdout, "network_ready", 60)
        events = first + _events(proc.stdout, "ready_for_calls", 60)
        kinds = [e["event"] for e in events]
        assert kinds.index("network_ready") < kinds.index("ready_for_calls"), kinds
        ready = events[-1]
        # the two farthest SAEs (two hops apart), not the first two of the file
        assert (ready["from"], ready["to"]) == ("alice", "bob"), ready
        assert ready["route"] == ["west", "middle", "east"] and ready["hops"] == 2, ready
        assert ready["seconds"] > 0
        # what the line promised: a key relayed between them now, the same at both ends
        info = json.loads((d / "network.json").read_text())

        def client(sae: str) -> httpx.Client:
            s = info["saes"][sae]
            ctx = client_context(Path(s["ca_cert"]), Path(s["cert"]), Path(s["key"]))
            return httpx.Client(base_url=s["kme_url"], verify=ctx, timeout=20)

        with client("alice") as a, client("bob") as b:
            r = a.post("/api/v1/keys/bob/enc_keys", json={"number": 1, "size": 256})
            assert r.status_code == 200, r.text
            [key] = r.json()["keys"]
            r2 = b.post(
                "/api/v1/keys/alice/dec_keys", json={"key_IDs": [{"key_ID": key["key_ID"]}]}
            )
            assert r2.status_code == 200 and r2.json()["keys"] == [key], r2.text
        # the nodes watch their modules' status (held until it moves on), not poll it
        admin = info["admin"]
        ctx = client_context(
            Path(info["node_ca_cert"]), Path(admin["node_cert"]), Path(admin["node_key"])
        )
        with httpx.Client(verify=ctx, timeout=20) as c:
            url = info["nodes"]["middle"]["node_url"] + "/kms/v1/state"
            counters = c.get(url).json()["counters"]
        assert counters["module_watches"] >= 2, counters  # one per link at least
        # a node that dies on its own is started again, and the route carries keys again
        os.kill(info["nodes"]["middle"]["pid"], signal.SIGKILL)
        seen = _events(proc.stderr, "process_restarted", 60, other_lines=True)
        [exited] = [e for e in seen if e["event"] == "process_exited"]
        assert (exited["name"], exited["code"]) == ("middle", -signal.SIGKILL), seen
        restarted = seen[-1]
        assert (restarted["name"], restarted["restarts"]) == ("middle", 1), seen
        info = json.loads((d / "network.json").read_text())
        assert info["nodes"]["middle"]["pid"] == restarted["pid"]
        deadline = time.monotonic() + 60
        with client("alice") as a, client("bob") as b:
            while True:  # until the restarted node has synced its links again
                r = a.post("/api/v1/keys/bob/enc_keys", json={"number": 1, "size": 256})
                if r.status_code == 200 or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert r.status_code == 200, r.text
            [key] = r.json()["keys"]
            r2 = b.post(
                "/api/v1/keys/alice/dec_keys", json={"key_IDs": [{"key_ID": key["key_ID"]}]}
            )
            assert r2.status_code == 200 and r2.json()["keys"] == [key], r2.text
        started = _descendants(proc.pid)
        pids = {v["pid"] for v in info["nodes"].values()} | {
            v["pid"] for v in info["modules"].values()
        }
        assert pids <= started, (pids, started)
        assert len(started) >= len(pids) + 2  # the zygotes too
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in started) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [p for p in started if _alive(p)]
        assert not (d / "network.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_farthest_saes_and_a_progress_line_that_fits() -> None:
    import tomllib

    topo = parse_topology(tomllib.loads(CHAIN), "chain3")
    assert farthest_saes(topo) == CallPair("alice", "bob", "west", "east", 2)
    r = Readiness(
        CallPair("alice", "bob", "west", "east", 2),
        False,
        2,
        2,
        1,
        (),
        "no route with key yet: middle-east (too little key: middle holds 0 bits)",
        12.34,
    )
    line = progress_line(r)
    assert "links holding key 1/2" in line and "alice@west -> bob@east" in line
    assert len(fit(line, 60)) == 60 and fit(line, 60).endswith("…")
    assert fit(line, 1000) == line
