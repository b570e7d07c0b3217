"""How long `network status` takes at real size: asking N nodes, and asking the launcher.

Serves, in this one process, a stand-in of every node's ``GET /kms/v1/state`` on its own HTTPS
port (the node trust domain's certificates, client certificates required, as a node does) with
a state of the size a real node of that topology returns (its links, the link-state view of
every link of the network), then times, in a separate process: the collection and summary with
new connections one after the other (``parallel=1``) and 32 at a time (the command's bound),
the same over kept-alive connections (what the launcher holds), and the whole ``qkd-keyserver
network status`` command (wall and CPU seconds, medians): asking the nodes itself; asking a
status socket (:mod:`keyserver.network.statussocket`) served from kept-alive connections, once
with its cache empty (the request waits for one collection: the first request after the
launcher was idle) and then asked again within seconds (answered from the cache); with, for
scale, a bare ``python -c pass`` and a Python importing what the command imports. Ratios are
against the command asking the nodes in the same run. The stand-ins all share this process
(their handshakes are served one after the other); real nodes answer in their own.

    .venv/bin/python bench/status_speed.py --topology hefei-metro-full
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from keyserver.network.plan import free_ports
from keyserver.pki.domains import NetworkPki
from keyserver.pki.tls import server_context
from keyserver.topology import Topology, load_topology

TIMING = """
import json, resource, subprocess, sys, time
from pathlib import Path
from keyserver.network.stateclient import StateClient
from keyserver.network.status import collect, summarise
from keyserver.network.statussocket import StatusSocket
from keyserver.pki.certificates import CertPaths
info = json.loads(Path(sys.argv[1]).read_text())
def new_client():
    return StateClient(Path(info["node_ca_cert"]), CertPaths(Path(info["admin"]["node_cert"]),
                                                             Path(info["admin"]["node_key"])))
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
out, used = {}, {}
warm = new_client()
collect(info, warm)  # its connections are open from now on (the launcher's)
for kind, parallel in [("1", 1), ("32", 32), ("warm", 32)] * 3:
    client = warm if kind == "warm" else new_client()
    t, c = time.perf_counter(), cpu()
    states = collect(info, client, parallel=parallel)
    summarise(info, states)
    out.setdefault(kind, []).append(time.perf_counter() - t)
    used.setdefault(kind, []).append(cpu() - c)
    assert all(s is not None for s in states.values()), "a node did not answer"
med = lambda v: sorted(v)[len(v) // 2]
command = [sys.executable, "-m", "keyserver.cli", "network", "status", "--dir",
           str(Path(sys.argv[1]).parent)]
def timed(cmd=command):
    # wall and CPU (user + system) seconds of one run of cmd
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, check=False)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
def runs(n, cmd=command):
    got = [timed(cmd) for _ in range(n)]
    return {"wall": med([w for w, _ in got]), "cpu": med([c for _, c in got])}
python_pass = runs(3, [sys.executable, "-c", "pass"])
status_imports = runs(3, [sys.executable, "-c", "from keyserver.cli import build_parser, "
                          "layers_for; import keyserver.network.status, "
                          "keyserver.network.statussocket; build_parser(layers_for(['network']))"])
direct = runs(3)  # no launcher: the command asks every node itself
sock = StatusSocket(Path(sys.argv[1]).parent, lambda: summarise(info, collect(info, warm)))
cold = timed()  # the launcher's cache is empty: the request waits for one collection
warm_runs = runs(5)  # asked again within seconds: from the cache, refreshed in the background
background = sock.cache.collections
sock.close()
if len(sys.argv) > 2:
    import cProfile, pstats
    cProfile.run("[warm.get(v['node_url']) for v in info['nodes'].values()]", sys.argv[2])
print(json.dumps({"wall": {k: med(v) for k, v in out.items()},
                  "cpu": {k: med(v) for k, v in used.items()},
                  "command_direct": direct, "command_via_launcher_cold": cold,
                  "command_via_launcher_cached": warm_runs, "launcher_collections": background,
                  "python_pass": python_pass, "status_imports": status_imports}))
"""


def state_of(topo: Topology, node: str) -> dict[str, Any]:
    """A node's state as the node serves it, with plausible figures."""
    report = {
        "up": True,
        "alarm": False,
        "reason": "",
        "qber": 0.02,
        "rate_bps": 41000.0,
        "stock_bits": 131072,
        "module_state": "running",
    }
    links = {
        x.id: {
            "neighbour": x.other(node),
            "role": "transmitter" if x.a == node else "receiver",
            "synced": True,
            "neighbour_ok": True,
            "report": report,
            "stock_bits": {x.a: 131072, x.b: 131072},
            "module": {
                "state": "running",
                "key_rate_bps": 41000.0,
                "qber_ewma": 0.02,
                "blocks_ok": 12,
                "blocks_aborted": 0,
                "eavesdropper_alarm": False,
            },
            "bits_drawn": 0,
            "bits_spent_payload": 0,
            "bits_spent_auth": 0,
            "desyncs_repaired": 0,
        }
        for x in topo.links_of(node)
    }
    network = [
        {
            "link": x.id,
            "up": True,
            "reasons": [],
            "alarm": False,
            "qber": 0.02,
            "rate_bps": 41000.0,
            "stock_bits": 131072,
        }
        for x in topo.links
    ]
    return {
        "node": node,
        "time": time.time(),
        "links": links,
        "network": network,
        "counters": {
            "relays_delivered": 0,
            "relays_failed": 0,
            "hops_forwarded": 0,
            "desyncs_repaired": 0,
        },
        "held_keys": 0,
        "pending_relays": 0,
        "pairs": {},
    }


async def main(topology: str, profile: list[str]) -> None:
    topo = load_topology(topology)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        pki = NetworkPki(d / "pki")
        creds = pki.node("standin")  # one server certificate for every stand-in (127.0.0.1)
        ctx = server_context(creds.node_ca, creds.node.cert, creds.node.key)
        admin = pki.node_admin()
        ports = free_ports(len(topo.nodes), set())
        runners = []
        for n, port in zip(topo.node_ids(), ports, strict=True):
            body = json.dumps(state_of(topo, n))

            async def handler(_: web.Request, body: str = body) -> web.Response:
                return web.Response(text=body, content_type="application/json")

            app = web.Application()
            app.router.add_get("/kms/v1/state", handler)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ctx).start()
            runners.append(runner)
        try:
            info = {
                "topology": topo.name,
                "node_ca_cert": str(pki.ca_cert("node")),
                "admin": {"node_cert": str(admin.cert), "node_key": str(admin.key)},
                "nodes": {
                    n: {"node_url": f"https://127.0.0.1:{p}"}
                    for n, p in zip(topo.node_ids(), ports, strict=True)
                },
                "links": {
                    x.id: {"a": x.a, "b": x.b, "distance_km": x.distance_km} for x in topo.links
                },
            }
            (d / "network.json").write_text(json.dumps(info))
            timing = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                TIMING,
                str(d / "network.json"),
                *profile,
                stdout=subprocess.PIPE,
            )
            out, _ = await timing.communicate()
            got = json.loads(out)

            def r3(d: dict[str, float]) -> dict[str, float]:
                return {k: round(v, 3) for k, v in d.items()}

            cold_wall, cold_cpu = got["command_via_launcher_cold"]
            print(
                json.dumps(
                    {
                        "topology": topo.name,
                        "nodes": len(topo.nodes),
                        "collect_sequential_s": round(got["wall"]["1"], 3),
                        "collect_parallel_32_s": round(got["wall"]["32"], 3),
                        "collect_kept_alive_s": round(got["wall"]["warm"], 3),
                        "client_cpu_s": r3(got["cpu"]),
                        "command_asking_nodes_s": r3(got["command_direct"]),
                        "command_via_launcher_cold_s": {
                            "wall": round(cold_wall, 3),
                            "cpu": round(cold_cpu, 3),
                        },
                        "command_via_launcher_cached_s": r3(got["command_via_launcher_cached"]),
                        "launcher_collections": got["launcher_collections"],
                        "status_imports_s": r3(got["status_imports"]),
                        "python_pass_s": r3(got["python_pass"]),
                        "cold_over_asking_nodes": round(
                            cold_wall / got["command_direct"]["wall"], 3
                        ),
                        "cached_over_asking_nodes": round(
                            got["command_via_launcher_cached"]["wall"]
                            / got["command_direct"]["wall"],
                            3,
                        ),
                        "load_average": [round(x, 2) for x in os.getloadavg()],
                    }
                )
            )
        finally:
            for r in runners:
                await r.cleanup()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--topology", default="hefei-metro-full")
    p.add_argument("--profile", help="also write a cProfile of one sequential collection here")
    a = p.parse_args()
    asyncio.run(main(a.topology, [a.profile] if a.profile else []))
