"""Helpers for tests of real QKD module processes: PKI, config files, start/stop, ETSI clients."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from keyserver.pki.certificates import LOCAL_NAMES, CertificateAuthority
from keyserver.pki.tls import client_context

LINK = "alpha-beta"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Pair:
    dir: Path
    ca: Path
    configs: dict[str, Path]
    ports: dict[str, int]
    procs: dict[str, subprocess.Popen[bytes]]
    logs: dict[str, Path]

    def client(self, who: str) -> httpx.Client:
        pki = self.dir / "pki"
        ctx = client_context(self.ca, pki / f"{who}.pem", pki / f"{who}.key")
        return httpx.Client(verify=ctx, timeout=10.0)

    def url(self, role: str) -> str:
        return f"https://127.0.0.1:{self.ports[role]}"

    def start(self, role: str, env: dict[str, str] | None = None) -> None:
        log = self.logs[role].open("ab")
        self.procs[role] = subprocess.Popen(
            [sys.executable, "-m", "keyserver.cli", "module", "--config", str(self.configs[role])],
            stdout=log, stderr=log, env={**os.environ, **(env or {})},
        )

    def kill(self, role: str) -> None:
        p = self.procs[role]
        p.send_signal(signal.SIGKILL)
        p.wait(10)

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def status(self, role: str) -> dict[str, Any]:
        node = "nodeA" if role == "transmitter" else "nodeB"
        peer = "nodeB" if role == "transmitter" else "nodeA"
        with self.client(node) as c:
            r = c.get(f"{self.url(role)}/api/v1/keys/{peer}/status")
        r.raise_for_status()
        body: dict[str, Any] = r.json()
        return body

    def wait_status(self, role: str, pred: Any, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            for p in self.procs.values():
                if p.poll() is not None and p.returncode not in (None, -9):
                    raise AssertionError(f"a module exited with {p.returncode}: "
                                         + self.logs_text())
            try:
                last = self.status(role)
                if pred(last):
                    return last
            except (httpx.HTTPError, ssl.SSLError, OSError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"timeout waiting for {role} status; last {last}\n{self.logs_text()}")

    def logs_text(self) -> str:
        return "\n".join(f"--- {k}\n{v.read_text()[-3000:]}" for k, v in self.logs.items()
                         if v.exists())


def make_pair(
    directory: Path,
    *,
    distance_km: float = 10.0,
    block_pulses: int = 100_000_000,
    max_key_count: int = 64,
    key_size: int = 256,
    testing: bool = True,
    seed: int | None = 5,
    extra_params: str = "",
) -> Pair:
    pki = directory / "pki"
    ca = CertificateAuthority.create(pki, "module CA")
    for cn in ("QKD-tx", "QKD-rx"):
        ca.issue(pki, cn, cn, server_names=LOCAL_NAMES)
    for cn in ("nodeA", "nodeB", "admin", "intruder"):
        ca.issue(pki, cn, cn)
    authkey = directory / "link.authkey"
    fd = os.open(authkey, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(os.urandom(256 * 1024))
    qport, cport = free_port(), free_port()
    ports = {"transmitter": free_port(), "receiver": free_port()}
    configs: dict[str, Path] = {}
    logs: dict[str, Path] = {}
    for role, mid, local, remote, seed_off in (
        ("transmitter", "QKD-tx", "nodeA", "nodeB", 0), ("receiver", "QKD-rx", "nodeB", "nodeA", 1)
    ):
        seed_line = f"seed = {seed + seed_off}" if seed is not None else ""
        text = f"""
[module]
id = "{mid}"
link = "{LINK}"
role = "{role}"
data_dir = "data-{role}"
testing = {"true" if testing else "false"}
{seed_line}

[northbound]
host = "127.0.0.1"
port = {ports[role]}
ca_cert = "pki/ca.pem"
cert = "pki/{mid}.pem"
key = "pki/{mid}.key"
local_node = "{local}"
remote_node = "{remote}"
admin = "admin"
key_size = {key_size}
max_key_count = {max_key_count}
max_key_per_request = 64

[quantum_channel]
address = "127.0.0.1:{qport}"
distance_km = {distance_km}
eve_fraction = 0.0
[quantum_channel.params]
block_pulses = {block_pulses}
{extra_params}

[classical_channel]
address = "127.0.0.1:{cport}"
initial_auth_key = "link.authkey"
"""
        path = directory / f"{role}.toml"
        path.write_text(text)
        configs[role] = path
        logs[role] = directory / f"{role}.log"
    return Pair(directory, pki / "ca.pem", configs, ports, {}, logs)
