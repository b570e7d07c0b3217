"""Helpers for tests of real QKD module processes: PKI, config files, start/stop, ETSI clients."""

from __future__ import annotations

import contextlib
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
from keyserver.ports import free_port

LINK = "alpha-beta"


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
            stdout=log,
            stderr=log,
            env={**os.environ, **(env or {})},
        )

    def kill(self, role: str) -> None:
        p = self.procs[role]
        p.send_signal(signal.SIGKILL)
        p.wait(10)

    def stop(self) -> None:
        """SIGTERM both modules, SIGKILL what still runs 3 s later (a module in the middle of
        a physics block exits only once the block's thread is done: in the suite that wait
        ran into the old 15 s bound; nothing reads the stores after a test's stop)."""
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 3.0
        for p in self.procs.values():
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
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
                    raise AssertionError(
                        f"a module exited with {p.returncode}: " + self.logs_text()
                    )
            try:
                last = self.status(role)
                if pred(last):
                    return last
            except (httpx.HTTPError, ssl.SSLError, OSError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"timeout waiting for {role} status; last {last}\n{self.logs_text()}")

    def logs_text(self) -> str:
        return "\n".join(
            f"--- {k}\n{v.read_text()[-3000:]}" for k, v in self.logs.items() if v.exists()
        )


def make_pair(
    directory: Path,
    *,
    distance_km: float = 10.0,
    block_pulses: int = 100_000_000,
    max_key_count: int = 64,
    key_size: int = 1024,
    testing: bool = True,
    seed: int | None = 5,
    extra_params: str = "",
    classical_connect_port: int | None = None,
    classical_port: int | None = None,
    quantum_connect_port: int | None = None,
    quantum_port: int | None = None,
    fidelity: str = "physics",
) -> Pair:
    pki = directory / "pki"
    ca = CertificateAuthority.create(pki, "module CA")
    for cn in ("QKD-tx", "QKD-rx"):
        ca.issue(pki, cn, cn, server_names=LOCAL_NAMES)
    for cn in ("nodeA", "nodeB", "admin", "intruder"):
        ca.issue(pki, cn, cn)
    channel_key = directory / "link.channelkey"
    fd = os.open(channel_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(os.urandom(32))
    authkey = directory / "link.authkey"
    fd = os.open(authkey, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(os.urandom(256 * 1024))
    qport, cport = quantum_port or free_port(), classical_port or free_port()
    ports_extra = {"classical": cport, "quantum": qport}
    ports = {"transmitter": free_port(), "receiver": free_port()}
    configs: dict[str, Path] = {}
    logs: dict[str, Path] = {}
    for role, mid, local, remote, seed_off in (
        ("transmitter", "QKD-tx", "nodeA", "nodeB", 0),
        ("receiver", "QKD-rx", "nodeB", "nodeA", 1),
    ):
        seed_line = f"seed = {seed + seed_off}" if seed is not None else ""
        c_port = cport
        if role == "transmitter" and classical_connect_port is not None:
            c_port = classical_connect_port
        q_port = qport
        if role == "transmitter" and quantum_connect_port is not None:
            q_port = quantum_connect_port
        text = f"""
[module]
id = "{mid}"
link = "{LINK}"
role = "{role}"
data_dir = "data-{role}"
testing = {"true" if testing else "false"}
fidelity = "{fidelity}"
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
address = "127.0.0.1:{q_port}"
channel_key = "link.channelkey"
distance_km = {distance_km}
eve_fraction = 0.0
[quantum_channel.params]
block_pulses = {block_pulses}
{extra_params}

[classical_channel]
address = "127.0.0.1:{c_port}"
initial_auth_key = "link.authkey"
"""
        path = directory / f"{role}.toml"
        path.write_text(text)
        configs[role] = path
        logs[role] = directory / f"{role}.log"
    ports.update(ports_extra)
    return Pair(directory, pki / "ca.pem", configs, ports, {}, logs)


def key_windows(keys: list[bytes]) -> set[int]:
    """Every byte-aligned 64-bit window of every key (bit offsets are covered by shifting the
    record instead, see :func:`find_key_windows`)."""
    out: set[int] = set()
    for k in keys:
        for i in range(len(k) - 7):
            out.add(int.from_bytes(k[i : i + 8], "big"))
    return out


def find_key_windows(record: bytes, keys: list[bytes]) -> int:
    """How many 64-bit windows of the keys occur in ``record`` at any bit offset.

    Shift the record by 0..7 bits; read its windows at byte offsets r, r+8, ... as big-endian
    u64 (no copies per window); a 2^24-entry table of the wanted windows' low bits filters,
    an exact comparison confirms."""
    import numpy as np

    wanted = np.array(sorted(key_windows(keys)), dtype=np.uint64)
    if wanted.size == 0 or len(record) < 9:
        return 0
    table = np.zeros(1 << 24, dtype=bool)
    table[(wanted & np.uint64(0xFFFFFF)).astype(np.int64)] = True
    bits = np.unpackbits(np.frombuffer(record, dtype=np.uint8))
    hits = 0
    for shift in range(8):
        shifted = np.packbits(bits[shift:])
        for r in range(8):
            k = (shifted.shape[0] - r) // 8
            if k <= 0:
                continue
            win = np.frombuffer(shifted[r : r + 8 * k].tobytes(), dtype=">u8").astype(np.uint64)
            cand = win[table[(win & np.uint64(0xFFFFFF)).astype(np.int64)]]
            if cand.size:
                idx = np.minimum(np.searchsorted(wanted, cand), wanted.shape[0] - 1)
                hits += int(np.count_nonzero(wanted[idx] == cand))
    return hits


class RecordingProxy:
    """A loopback TCP proxy for the classical channel: records every byte each way, frame by
    frame (16-byte nonce, then ``u32 length || frame``), and can inject whole frames."""

    def __init__(self, target_port: int) -> None:
        import threading

        self.target = target_port
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = int(self.sock.getsockname()[1])
        self.frames: list[tuple[str, bytes]] = []  # ("tx"|"rx", frame) in arrival order
        self.raw: list[bytes] = []
        self._lock = threading.Lock()
        self._to_rx: list[socket.socket] = []
        self._stop = False
        self.tamper_next_tx = False  # flip a bit of the next transmitter frame in flight
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import threading

        while not self._stop:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._to_rx.append(upstream)
            threading.Thread(target=self._pipe, args=(client, upstream, "tx"), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, "rx"), daemon=True).start()

    def _read(self, s: socket.socket, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = s.recv(n - len(buf))
            if not chunk:
                raise ConnectionError
            buf += chunk
        return buf

    def _pipe(self, src: socket.socket, dst: socket.socket, who: str) -> None:
        try:
            nonce = self._read(src, 16)
            with self._lock:
                self.raw.append(nonce)
                dst.sendall(nonce)
            while True:
                head = self._read(src, 4)
                body = self._read(src, int.from_bytes(head, "big"))
                with self._lock:
                    self.frames.append((who, body))
                    self.raw.append(body)
                    if who == "tx" and self.tamper_next_tx:
                        self.tamper_next_tx = False
                        body = body[:-1] + bytes([body[-1] ^ 1])
                    dst.sendall(head + body)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()

    def inject_to_receiver(self, frame: bytes) -> None:
        with self._lock:
            up = self._to_rx[-1]
            up.sendall(len(frame).to_bytes(4, "big") + frame)

    def close(self) -> None:
        self._stop = True
        self.sock.close()


def frame_intervals(frames: list[tuple[str, bytes]]) -> dict[int, list[tuple[int, int]]]:
    """Pad intervals [position, position + size) used by the recorded frames, per direction."""
    out: dict[int, list[tuple[int, int]]] = {0: [], 1: []}
    for _, f in frames:
        flags, direction = f[1], f[2]
        pos = int.from_bytes(f[3:11], "big")
        out[direction].append((pos, pos + (32 if flags & 1 else 16)))
    return out
