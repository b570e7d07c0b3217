"""Real QKD networks for process-level tests: every module and node its own process.

:func:`running_network` lays a topology out in a directory, starts it with the launcher and
stops it at the end (SIGTERM, then SIGKILL). Tests kill and restart processes by name
(``launcher.kill(name)`` sends SIGKILL; ``launcher.start(name)`` starts it again).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from keyserver.network.launcher import Launcher
from keyserver.network.plan import Options, make_plan
from keyserver.pki.tls import client_context
from keyserver.topology import Topology


@dataclass
class RunningNetwork:
    launcher: Launcher
    info: dict[str, Any]

    @property
    def directory(self) -> Path:
        return self.launcher.plan.directory

    def sae(self, name: str, timeout: float = 20.0) -> httpx.Client:
        s = self.info["saes"][name]
        ctx = client_context(Path(s["ca_cert"]), Path(s["cert"]), Path(s["key"]))
        return httpx.Client(base_url=s["kme_url"], verify=ctx, timeout=timeout)

    def state(self, node: str) -> dict[str, Any]:
        assert self.launcher.state is not None
        st = self.launcher.state.get(self.info["nodes"][node]["node_url"])
        assert st is not None, f"node {node} does not answer"
        return st

    def try_state(self, node: str) -> dict[str, Any] | None:
        assert self.launcher.state is not None
        return self.launcher.state.get(self.info["nodes"][node]["node_url"])

    def route(self, src: str, dst: str) -> list[str] | None:
        with self.sae(src) as c:
            st = c.get(f"/api/v1/keys/{dst}/status").json()
        r = st["status_extension"]["route"]
        return None if r is None else list(r["nodes"])

    def wait(self, cond: Any, timeout: float = 60.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(httpx.HTTPError, AssertionError, KeyError):
                if cond():
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.3)

    def records(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for f in sorted((self.directory / "records").glob("*.jsonl")):
            node = f.stem
            for line in f.read_text().splitlines():
                if line.strip():
                    rec = json.loads(line)
                    rec["node"] = node
                    out.append(rec)
        return out


@contextlib.contextmanager
def running_network(directory: Path, topo: Topology, **options: Any) -> Iterator[RunningNetwork]:
    # small stocks at nodes and modules and QKD blocks of 0.3 s of link time: a full module
    # pauses, and runs blocks again soon after a test draws key, so that an eavesdropper is
    # noticed within seconds
    opts = Options(
        **{
            "seed": 5,
            "testing": True,
            "max_key_count": 256,
            "module_max_keys": 128,
            "module_params": {"block_pulses": 300_000_000},
            **options,
        }
    )
    launcher = Launcher(make_plan(directory, topo, opts))
    launcher.lock()
    try:
        launcher.check_ports()
        launcher.prepare()
        launcher.start_all()
        launcher.wait_ready(timeout=120)
        launcher.write_info()
        net = RunningNetwork(launcher, launcher.info())
        yield net
    finally:
        launcher.stop()
        launcher.unlock()


def stocked(net: RunningNetwork, bits: int = 60_000) -> bool:
    """Every link holds `bits` in each direction (its transmitter node says; 60,000 is nearly the
    64 kbit cap of the tests' networks), and that node's link-state view has the link up, i.e.
    the other end's LSA saying so has arrived (a route exists, not only the node's own half)."""
    for lid, spec in net.info["links"].items():
        st = net.try_state(spec["a"])
        if st is None:
            return False
        stock = st["links"][lid]["stock_bits"]
        if min(stock.values()) < bits or not st["links"][lid]["report"]["up"]:
            return False
        if not all(v["up"] for v in st["network"] if v["link"] == lid):
            return False
    return True
