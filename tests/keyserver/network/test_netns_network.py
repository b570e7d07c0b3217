"""A 4-site line network with every site in its own network namespace (``network --netns``):
a key relayed end to end and a qphone call between terminals in the end sites' namespaces,
every site's traffic leaving its namespace through its veth (nothing on 127.0.0.1), every
namespace removed afterwards. Needs CAP_NET_ADMIN (CI runs as root).

    a --20 km-- b --20 km-- c --20 km-- d        alice at a, bob at d
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from keyserver.network.netns import (
    SUBNET_POOL,
    DelayMethod,
    NetnsError,
    plan_layout,
    prefix_for,
)
from keyserver.network.netnslauncher import check_rights, describe, netns_launcher, remove
from keyserver.network.plan import Options
from keyserver.pki.tls import client_context
from tests.support.node_fixtures import topology
from tests.support.paths import BIN

pytestmark = pytest.mark.timeout(300)

LINE4 = """
[defaults]
distance_km = 20
[[nodes]]
id = "a"
[[nodes]]
id = "b"
[[nodes]]
id = "c"
[[nodes]]
id = "d"
[[links]]
a = "a"
b = "b"
[[links]]
a = "b"
b = "c"
[[links]]
a = "c"
b = "d"
[[saes]]
id = "alice"
node = "a"
[[saes]]
id = "bob"
node = "d"
"""


def _skip_without_rights() -> None:
    try:
        check_rights()
    except NetnsError as e:
        pytest.skip(f"needs the right to make network namespaces: {e}")


def _ip_json(*args: str) -> Any:
    out = subprocess.run(["ip", "-j", *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def _tx_bytes(ns: str) -> int:
    return int(_ip_json("-n", ns, "-s", "link", "show", "eth0")[0]["stats64"]["tx"]["bytes"])


def _sockets(ns: str, *flags: str) -> list[tuple[str, str]]:
    """(local, peer) address:port of the TCP sockets in a namespace."""
    out = subprocess.run(
        ["ip", "netns", "exec", ns, "ss", "-Htn", *flags],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rows = [line.split() for line in out.splitlines() if line.strip()]
    return [(r[3], r[4]) for r in rows]


def _sae(info: dict[str, Any], name: str) -> httpx.Client:
    s = info["saes"][name]
    ctx = client_context(Path(s["ca_cert"]), Path(s["cert"]), Path(s["key"]))
    return httpx.Client(base_url=s["kme_url"], verify=ctx, timeout=20)


def _relay(info: dict[str, Any], deadline: float) -> tuple[str, bytes, bytes]:
    """A key from alice's node to bob's (waiting, as a call does, for the links to hold key)."""
    with _sae(info, "alice") as m, _sae(info, "bob") as s:
        while True:
            r = m.post("/api/v1/keys/bob/enc_keys", json={"number": 1, "size": 256})
            if r.status_code == 200:
                k = r.json()["keys"][0]
                got = s.post(
                    "/api/v1/keys/alice/dec_keys", json={"key_IDs": [{"key_ID": k["key_ID"]}]}
                )
                assert got.status_code == 200, got.text
                return (
                    k["key_ID"],
                    base64.b64decode(k["key"]),
                    base64.b64decode(got.json()["keys"][0]["key"]),
                )
            assert r.status_code == 503, r.text  # a shortage while the first blocks run
            assert time.monotonic() < deadline, f"no key relayed a -> d: {r.text}"
            time.sleep(1.0)


def test_line_of_four_sites_in_namespaces_relays_a_key_across_their_veths(
    tmp_path: Path,
) -> None:
    _skip_without_rights()
    # the network tests' settings: small stocks, QKD blocks of 0.3 s of link time; emulated
    # links (the product's own fidelity: same module processes, ports, sealed quantum channel
    # and ETSI 014 API; a node cannot tell): this test is about the namespaces, veths and
    # calls across them, and the per-pulse physics of three links cost most of its CPU
    opts = Options(
        seed=5,
        testing=True,
        max_key_count=256,
        module_max_keys=128,
        module_params={"block_pulses": 300_000_000},
        fidelity="emulated",
    )
    launcher = netns_launcher(tmp_path / "net", topology(LINE4), opts)
    prefix = launcher.layout.prefix
    launcher.lock()
    try:
        launcher.check_ports()
        launcher.prepare()
        launcher.start_all()
        launcher.wait_ready(timeout=150)
        launcher.write_info()
        info = launcher.info()
        assert info["netns"]["delay"] in ("netem", "forwarder")
        assert "namespaces" in describe(info)  # what the launcher prints: how the fibre is made
        sites = info["netns"]["sites"]
        for node, site in sites.items():  # the root namespace reaches each node at its site
            assert info["nodes"][node]["node_url"].startswith(f"https://{site['address']}:")
        before = {n: _tx_bytes(s["ns"]) for n, s in sites.items()}
        key_id, k1, k2 = _relay(info, time.monotonic() + 150)
        assert k1 == k2 and len(k1) == 32, key_id
        addresses = {s["address"] for s in sites.values()}
        topo = launcher.plan.topology
        for node, site in sites.items():
            # every listener of the site is on its own address, or (a delay line) on a fibre
            # neighbour's: none on loopback or on any address
            listening = {loc for loc, _ in _sockets(site["ns"], "-l")}
            allowed = {site["address"]} | {sites[n]["address"] for n in topo.neighbours(node)}
            assert {loc.rsplit(":", 1)[0] for loc in listening} <= allowed, (node, listening)
            for url in (info["nodes"][node]["sae_url"], info["nodes"][node]["node_url"]):
                assert url.removeprefix("https://") in listening, (node, url)
            # nothing in the site talks over 127.0.0.1, and it talks to other sites
            conns = _sockets(site["ns"])
            assert not [c for c in conns if "127.0.0.1" in c[0] or "127.0.0.1" in c[1]]
            peers = {p.rsplit(":", 1)[0] for _, p in conns} - {site["address"]}
            assert peers & addresses, (node, conns)
            # and its traffic went out of its namespace through its veth
            assert _tx_bytes(site["ns"]) > before[node], node
        # a call in each mode, each terminal in its site's namespace, media only on the sites'
        # addresses; the OTP call's pad relayed across the three hops as it talks
        for port, mode in ((7000, "aes"), (7001, "otp")):
            summaries = _call(info, sites["a"], sites["d"], mode, port)
            for who, summary in summaries.items():
                assert summary["mode"] == mode and summary["frames_received"] > 0, (who, summary)
            if mode == "otp":
                assert summaries["alice"]["qkd_bits"]["pad"] > 0, summaries["alice"]
    finally:
        launcher.stop()
        launcher.unlock()
    _assert_removed(prefix)


def _call(
    info: dict[str, Any], a: dict[str, str], d: dict[str, str], mode: str, port: int
) -> dict[str, dict[str, Any]]:
    """A 3 s call in ``mode`` alice (site a) -> bob (site d): the README's commands, run in the
    sites' namespaces; the summaries of both ends."""
    listen = f"{d['address']}:{port}"
    common = ["--input", "silence", "--output", "discard", "--json"]

    def qphone(ns: str, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["ip", "netns", "exec", ns, str(BIN / "qphone"), *args, *common],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    bob = qphone(
        d["ns"],
        "answer",
        "--listen",
        listen,
        "--ice-host",
        d["address"],
        "--profile",
        info["saes"]["bob"]["profile"],
    )
    alice = None
    try:
        assert bob.stderr is not None
        seen = ""
        while "waiting for a call" not in seen:
            line = bob.stderr.readline()
            assert line, f"qphone answer did not listen: {seen}"
            seen += line
        alice = qphone(
            a["ns"],
            "call",
            listen,
            "--ice-host",
            a["address"],
            "--profile",
            info["saes"]["alice"]["profile"],
            "--mode",
            mode,
            "--duration",
            "3",
        )
        out = {}
        for who, proc in (("alice", alice), ("bob", bob)):
            stdout, stderr = proc.communicate(timeout=90)
            assert proc.returncode == 0, (who, stderr)
            out[who] = json.loads(stdout.strip().splitlines()[-1])
        return out
    finally:
        for proc in (alice, bob):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


def _assert_removed(prefix: str) -> None:
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert prefix not in left  # every namespace removed...
    assert all(link.get("ifname") != prefix for link in _ip_json("link", "show"))  # ...and veth


def test_sigterm_while_starting_removes_every_namespace(tmp_path: Path) -> None:
    _skip_without_rights()
    net = tmp_path / "net"
    prefix = prefix_for(net)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "keyserver.cli",
            "network",
            "--topology",
            "pair",
            "--dir",
            str(net),
            "--netns",
            "--seed",
            "5",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (net / "logs" / "node-KME-B.log").exists():  # namespaces made, all started
            assert proc.poll() is None and time.monotonic() < deadline, (
                proc.stderr.read() if proc.stderr else ""
            )
            time.sleep(0.1)
        assert (
            f"{prefix}-KME-A"
            in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            remove(plan_layout(topology(LINE4), prefix, SUBNET_POOL, DelayMethod.FORWARDER))
    _assert_removed(prefix)


def test_without_the_right_to_make_namespaces_one_line_names_the_fix(tmp_path: Path) -> None:
    _skip_without_rights()  # to drop the right, the test needs it
    r = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys.executable,
            "-m",
            "keyserver.cli",
            "network",
            "--topology",
            "pair",
            "--dir",
            str(tmp_path / "n"),
            "--netns",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "CAP_NET_ADMIN" in r.stderr and "root" in r.stderr
    assert not (tmp_path / "n").exists()
