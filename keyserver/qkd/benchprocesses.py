"""``qkd-keyserver bench-link --processes``: a real module pair on loopback, CPU from /proc.

It writes a throw-away PKI, pre-shared authentication key and the two module configs into a
temporary directory, starts a transmitter and a receiver (``qkd-keyserver module``, the very
processes a site runs) at the given distance, lets the link run in real time, and reads the CPU
time (user + system, all threads) of both processes from ``/proc/PID/stat`` whenever the
transmitter logs a finished block. The figure is CPU seconds of both processes per second of
real time, between the first and the last finished block of the run: whole blocks only, so
start-up (imports, plan, TLS) and a half-done block do not count; the link time those blocks
covered is printed beside it (it equals the real time when the pair keeps up).

Nothing polls the modules' northbound API during the run (the bench only reads their logs and
``/proc``), and the key stock limit is raised so production never pauses: the figure is what the
link itself costs, not key delivery to a KMS.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from keyserver.ports import free_port
from keyserver.qkd.finitekey import optimised
from keyserver.qkd.physics import LinkParams
from keyserver.qkd.role import Role

CORE_TARGET = 0.1  # target: at most ~0.1 core per 70 km link in real time


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc/PID/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14, 15)


def _write_pair(
    directory: Path, distance: float, block_pulses: int, seed: int | None
) -> dict[Role, Path]:
    from keyserver.pki.certificates import LOCAL_NAMES, CertificateAuthority

    pki = directory / "pki"
    ca = CertificateAuthority.create(pki, "bench module CA")
    for cn in ("QKD-tx", "QKD-rx"):
        ca.issue(pki, cn, cn, server_names=LOCAL_NAMES)
    for cn in ("nodeA", "nodeB", "admin"):
        ca.issue(pki, cn, cn)
    channel_key = directory / "link.channelkey"
    fd = os.open(channel_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(os.urandom(32))
    authkey = directory / "link.authkey"
    fd = os.open(authkey, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(os.urandom(1 << 20))
    qport, cport = free_port(), free_port()
    configs: dict[Role, Path] = {}
    for role, mid, local, remote, off in (
        (Role.TRANSMITTER, "QKD-tx", "nodeA", "nodeB", 0),
        (Role.RECEIVER, "QKD-rx", "nodeB", "nodeA", 1),
    ):
        seeded = f"testing = true\nseed = {seed + off}" if seed is not None else ""
        text = f"""
[module]
id = "{mid}"
link = "bench"
role = "{role}"
data_dir = "data-{role}"
{seeded}

[northbound]
host = "127.0.0.1"
port = {free_port()}
ca_cert = "pki/ca.pem"
cert = "pki/{mid}.pem"
key = "pki/{mid}.key"
local_node = "{local}"
remote_node = "{remote}"
admin = "admin"
key_size = 1024
max_key_count = 10000000

[quantum_channel]
address = "127.0.0.1:{qport}"
channel_key = "link.channelkey"
distance_km = {distance}
[quantum_channel.params]
block_pulses = {block_pulses}

[classical_channel]
address = "127.0.0.1:{cport}"
initial_auth_key = "link.authkey"
"""
        path = directory / f"{role}.toml"
        path.write_text(text)
        configs[role] = path
    return configs


@dataclass
class ProcessRun:
    distance_km: float
    block_seconds: float
    blocks_ok: int = 0
    blocks_aborted: int = 0
    samples: list[tuple[float, float, float]] = field(default_factory=list)  # wall, tx, rx
    secret_bits: int = 0
    error: str | None = None

    def result(self) -> dict[str, object]:
        out: dict[str, object] = {
            "distance_km": self.distance_km,
            "block_seconds": self.block_seconds,
            "blocks_ok": self.blocks_ok,
            "blocks_aborted": self.blocks_aborted,
            "error": self.error,
        }
        if len(self.samples) >= 2:
            (w0, t0, r0), (w1, t1, r1) = self.samples[0], self.samples[-1]
            wall = w1 - w0
            blocks = len(self.samples) - 1
            out.update(
                {
                    "blocks_measured": blocks,
                    "wall_seconds": wall,
                    "link_seconds": blocks * self.block_seconds,
                    "cpu_transmitter": t1 - t0,
                    "cpu_receiver": r1 - r0,
                    "core_per_link_realtime": (t1 - t0 + r1 - r0) / wall if wall > 0 else 0.0,
                    "core_per_link_second": (t1 - t0 + r1 - r0) / (blocks * self.block_seconds),
                    "secret_bits_per_second": self.secret_bits / wall if wall > 0 else 0.0,
                }
            )
        return out


def run_pair(
    distance: float,
    seconds: float,
    block_seconds: float,
    seed: int | None = 7,
    keep: Path | None = None,
) -> dict[str, object]:
    """Run a real module pair for ``seconds`` of real time after its first finished block."""
    base = LinkParams(distance_km=distance)
    if block_seconds > 0:
        block_pulses = round(block_seconds * base.clock_hz)
    else:
        block_pulses = optimised(base).block_pulses
    run = ProcessRun(distance, block_pulses / base.clock_hz)
    tmp = Path(tempfile.mkdtemp(prefix="qkd-bench-"))
    procs: dict[Role, subprocess.Popen[bytes]] = {}
    try:
        configs = _write_pair(tmp, distance, block_pulses, seed)
        logs = {r: tmp / f"{r}.log" for r in configs}
        env = {**os.environ, "QKD_LOG_LEVEL": "INFO"}
        for role in (Role.RECEIVER, Role.TRANSMITTER):
            with logs[role].open("wb") as out:
                procs[role] = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "keyserver.cli",
                        "module",
                        "--config",
                        str(configs[role]),
                    ],
                    stdout=out,
                    stderr=out,
                    env=env,
                )
            time.sleep(0.3 if role is Role.RECEIVER else 0.0)
        deadline: float | None = None
        give_up = time.monotonic() + max(120.0, 4 * run.block_seconds + 60)
        seen = 0
        with logs[Role.TRANSMITTER].open("rb") as tx_log:
            pending = b""
            while True:
                for role, p in procs.items():
                    if p.poll() is not None:
                        raise RuntimeError(
                            f"the {role} exited with {p.returncode}: "
                            + logs[role].read_text()[-2000:]
                        )
                chunk = tx_log.read()
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    try:
                        ev = json.loads(line)
                    except ValueError:
                        continue
                    if ev.get("event") not in ("block_ok", "block_aborted"):
                        continue
                    now = time.monotonic()
                    run.samples.append(
                        (
                            now,
                            cpu_seconds(procs[Role.TRANSMITTER].pid),
                            cpu_seconds(procs[Role.RECEIVER].pid),
                        )
                    )
                    if seen > 0:
                        if ev["event"] == "block_ok":
                            run.blocks_ok += 1
                            run.secret_bits += int(ev.get("secret_bits", 0))
                        else:
                            run.blocks_aborted += 1
                    seen += 1
                    if deadline is None:
                        deadline = now + seconds
                now = time.monotonic()
                if deadline is not None and now >= deadline and seen >= 2:
                    break
                if deadline is None and now > give_up:
                    raise RuntimeError(
                        "no block finished: " + logs[Role.TRANSMITTER].read_text()[-2000:]
                    )
                if deadline is not None and now > deadline + 2 * run.block_seconds + 60:
                    raise RuntimeError("fewer than two blocks finished in the run")
                time.sleep(0.1)
    except RuntimeError as e:
        run.error = str(e)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        if keep is not None:
            shutil.copytree(tmp, keep, dirs_exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return run.result()


def print_table(results: list[dict[str, object]]) -> None:
    print(
        f"{'distance':>8} {'block s':>8} {'blocks':>6} {'real s':>8} {'link s':>8} "
        f"{'CPU tx':>8} {'CPU rx':>8} {'cores':>7} {'kbit/s':>8}  target"
    )
    for r in results:
        if "core_per_link_realtime" not in r:
            print(f"{r['distance_km']:8g}  no measurement: {r.get('error')}")
            continue
        core = float(r["core_per_link_realtime"])  # type: ignore[arg-type]
        ok = core <= CORE_TARGET
        print(
            f"{r['distance_km']:8g} {r['block_seconds']:8.1f} {r['blocks_measured']:6d} "
            f"{r['wall_seconds']:8.1f} {r['link_seconds']:8.1f} "
            f"{r['cpu_transmitter']:8.2f} {r['cpu_receiver']:8.2f} {core:7.4f} "
            f"{float(r['secret_bits_per_second']) / 1e3:8.1f}  "  # type: ignore[arg-type]
            f"<= {CORE_TARGET:g} core {'ok' if ok else 'MISSED'}"
        )
