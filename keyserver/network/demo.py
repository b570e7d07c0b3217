"""``qkd-keyserver demo``: the ``pair`` topology (two KMS nodes, one QKD link) for qphone.

Same flags and outputs as always: ``--port-a``/``--port-b`` are the SAE API ports of the nodes
``KME-A`` (alice) and ``KME-B`` (bob); ``DIR/alice.toml`` and ``DIR/bob.toml`` are qphone
profiles; ``DIR/demo.json`` (each KME's ID, URL, config, log and pid; each SAE's certificate,
key, CA and profile) appears once both nodes hold QKD key for both directions (a call can start)
and goes away when the demo stops. It runs
through the same launcher as ``qkd-keyserver network``: two QKD module processes (transmitter
at A, receiver at B) and two node processes.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keyserver.network.foreground import run_foreground
from keyserver.network.launcher import Launcher
from keyserver.network.plan import NetworkPlan, Options, make_plan
from keyserver.topology import load_topology

LINK = "A-B"
# The demo's link runs 1 s QKD blocks, so the first key is there seconds after start (at 10 km a
# 1 s block gives 0.74 of the protocol's asymptotic key rate; the planned 6.6 s block 0.82).
DEMO_BLOCK_SECONDS = 1.0


@dataclass(frozen=True)
class DemoOptions:
    directory: Path
    port_a: int = 8441
    port_b: int = 8442
    distance_km: float = 10.0
    eve_fraction: float = 0.0
    seed: int | None = None
    max_key_count: int = 16_384


def demo_plan(o: DemoOptions) -> NetworkPlan:
    opts = Options(
        seed=o.seed,
        eve={LINK: o.eve_fraction} if o.eve_fraction else {},
        distance_km=o.distance_km,
        max_key_count=o.max_key_count,
        module_params={"max_block_seconds": DEMO_BLOCK_SECONDS},
    )
    return make_plan(
        o.directory, load_topology("pair"), opts, sae_ports={"KME-A": o.port_a, "KME-B": o.port_b}
    )


def _outputs(launcher: Launcher, o: DemoOptions) -> tuple[Path, dict[str, Any]]:
    d = o.directory
    info = launcher.info()
    for sae in ("alice", "bob"):  # the profiles where the demo always put them
        shutil.copyfile(launcher.plan.profile(sae), d / f"{sae}.toml")
        info["saes"][sae]["profile"] = str(d / f"{sae}.toml")
        info["saes"][sae]["peer"] = "bob" if sae == "alice" else "alice"
    nodes = info["nodes"]
    info["kmes"] = {
        site: {
            "id": f"KME-{site}",
            "url": nodes[f"KME-{site}"]["sae_url"],
            "config": nodes[f"KME-{site}"]["config"],
            "log": nodes[f"KME-{site}"]["log"],
            "pid": nodes[f"KME-{site}"]["pid"],
        }
        for site in ("A", "B")
    }
    info["link"] = {"distance_km": o.distance_km, "eve_fraction": o.eve_fraction, "seed": o.seed}
    path = launcher.write_info("demo.json", info)
    return path, {
        "demo_json": str(path),
        "kme_a": info["kmes"]["A"]["url"],
        "kme_b": info["kmes"]["B"]["url"],
    }


def _banner(launcher: Launcher, path: Path, o: DemoOptions) -> list[str]:
    from keyserver.consolescript import script_command

    d, qphone = o.directory, script_command("qphone")
    return [
        "",
        f"QKD key servers ready: KME-A https://127.0.0.1:{o.port_a} (alice), "
        f"KME-B https://127.0.0.1:{o.port_b} (bob), {o.distance_km:g} km QKD link",
        f"  profiles: {d / 'alice.toml'}  {d / 'bob.toml'}   (details: {path})",
        f"  call:     {qphone} answer --listen 127.0.0.1:7000 --profile {d / 'bob.toml'}",
        f"            {qphone} call 127.0.0.1:7000 --profile {d / 'alice.toml'}",
        "  Ctrl-C stops both nodes and both QKD modules.",
        "",
    ]


class Demo:
    def __init__(self, opts: DemoOptions) -> None:
        self.opts = opts

    def run(self) -> int:
        o = self.opts
        launcher = Launcher(demo_plan(o))
        return run_foreground(
            launcher,
            prog="qkd-keyserver demo",
            ready_event="demo_ready",
            outputs=lambda la: _outputs(la, o),
            banner=lambda la, p: _banner(la, p, o),
            exit_on_child_death=True,
            first_key=True,
        )


def read_demo(directory: Path) -> dict[str, Any]:
    return dict(json.loads((directory / "demo.json").read_text()))
