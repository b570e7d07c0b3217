"""``qkd-keyserver bench pair``: ETSI 014 key pairs/s through real KMS nodes beside a bare server.

One run measures, with the same client and the same mutual TLS:

* **real**: ``enc_keys`` at the master SAE's node, then ``dec_keys`` at the slave SAE's node for
  the key it got (checking both copies match): over ``line5`` (four hops) a relay, over
  ``pair`` (one hop) a one-hop direct key (:mod:`keyserver.kms.directkey`: no node-to-node
  message; ``[routing] direct_one_hop``);
* **bare**: the same two requests against two minimal aiohttp servers (one process each, as the
  two end nodes are) with the end nodes' own SAE-API certificates and CA, that answer a fixed
  ETSI 014 key container: what the HTTP and TLS stack alone costs;

and prints pairs/s, p50/p99 of both and their ratio. Each worker process holds one keep-alive
mTLS connection to each end and loops; a pair's latency is from sending ``enc_keys`` to
receiving ``dec_keys``. Then **relay time**: one client, one 256-bit key at a time, the
``enc_keys`` latency (median and p99, and per hop; over one hop, the direct key's), and the
route's **call capacity** (:mod:`keyserver.kms.callcapacity`) from the bottleneck link's rate
and the measured pairs/s.

The network is a running ``qkd-keyserver demo`` (``--dir`` holding ``demo.json``) or one the
bench starts itself (``--topology``, emulated links by default so that the QKD modules leave the
CPU to the nodes) and stops at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import multiprocessing
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from keyserver.etsi014.key import Key
from keyserver.etsi014.messages import key_container, parse_key_container
from keyserver.kms.callcapacity import route_capacity
from keyserver.pki.tls import client_context, server_context

TARGET_RATIO = 0.5  # real pairs/s at least half the bare server's (issue: KME throughput)
FIXED_KEY = Key.of(uuid.UUID(int=1, version=4), bytes(32))


@dataclass(frozen=True)
class BenchTarget:
    url_a: str
    url_b: str
    ca: str
    alice: tuple[str, str]
    bob: tuple[str, str]
    master: str = "alice"
    slave: str = "bob"


@dataclass(frozen=True)
class ServerTls:
    ca_cert: str
    cert: str
    key: str


def target_from_info(info: dict[str, Any], master: str, slave: str) -> BenchTarget:
    s = info["saes"]
    return BenchTarget(
        s[master]["kme_url"],
        s[slave]["kme_url"],
        info["ca_cert"],
        (s[master]["cert"], s[master]["key"]),
        (s[slave]["cert"], s[slave]["key"]),
        master,
        slave,
    )


def load_target(directory: Path) -> BenchTarget:
    """The alice -> bob target of a running ``qkd-keyserver demo`` in `directory`."""
    return target_from_info(_demo_info(directory), "alice", "bob")


def _demo_info(directory: Path) -> dict[str, Any]:
    """What a running ``qkd-keyserver demo`` (demo.json) or ``network`` (network.json) wrote."""
    for name in ("demo.json", "network.json"):
        with contextlib.suppress(OSError):
            info: dict[str, Any] = json.loads((directory / name).read_text())
            return info
    raise SystemExit(
        f"{directory}/demo.json not found: start `qkd-keyserver demo --dir "
        f"{directory}` (or `qkd-keyserver network --dir {directory}`) first"
    )


def _sae_tls(info: dict[str, Any], sae: str) -> ServerTls:
    """The SAE-API TLS files of the node serving `sae` (what the bare server presents)."""
    from keyserver.kms.nodeconfig import load_node_config

    node = info["saes"][sae]["node"]
    tls = load_node_config(Path(info["nodes"][node]["config"])).sae_api.tls
    return ServerTls(str(tls.ca_cert), str(tls.cert), str(tls.key))


# -- the client (the same for the real nodes and the bare servers) --------------------------------
def _conn(url: str, ca: str, cert: tuple[str, str]) -> http.client.HTTPSConnection:
    u = urlsplit(url)
    ctx = client_context(Path(ca), Path(cert[0]), Path(cert[1]))
    return http.client.HTTPSConnection(u.hostname or "", u.port or 443, context=ctx, timeout=10)


def _call(conn: http.client.HTTPSConnection, path: str) -> tuple[int, Any]:
    status, body = _get(conn, path)
    return status, json.loads(body) if body else None


def _get(conn: http.client.HTTPSConnection, path: str) -> tuple[int, bytes]:
    conn.request("GET", path)
    resp = conn.getresponse()
    return resp.status, resp.read()


def _key(conn: http.client.HTTPSConnection, path: str) -> tuple[int, Key | None]:
    """GET enc_keys or dec_keys for one key: the status, and the key if it is 200 (the
    container parsed by keyserver's one parser, :func:`parse_key_container`)."""
    status, body = _get(conn, path)
    if status != 200:
        return status, None
    return status, parse_key_container(body, key_bytes=None, max_keys=1)[0]


def _worker(target: BenchTarget, seconds: float, size: int, ready: Any, out: Any) -> None:
    """Connect, wait until every worker has (`ready`: a barrier), loop for `seconds`."""
    a = _conn(target.url_a, target.ca, target.alice)
    b = _conn(target.url_b, target.ca, target.bob)
    a.connect()
    b.connect()
    ready.wait(60)
    deadline = time.time() + seconds
    lat: list[float] = []
    ids: list[str] = []
    errors: dict[str, int] = {}

    def err(kind: str) -> None:
        errors[kind] = errors.get(kind, 0) + 1

    while time.time() < deadline:
        t0 = time.perf_counter()
        try:
            st, key = _key(a, f"/api/v1/keys/{target.slave}/enc_keys?size={size}")
            if key is None:
                err(f"enc_{st}")
                time.sleep(0.01)
                continue
            st, dec = _key(b, f"/api/v1/keys/{target.master}/dec_keys?key_ID={key.key_id}")
            if dec is None:
                err(f"dec_{st}")
                continue
            if dec != key:
                err("mismatch")
                continue
        except (OSError, http.client.HTTPException, ValueError, KeyError) as e:
            err(type(e).__name__)
            a.close()
            b.close()
            a = _conn(target.url_a, target.ca, target.alice)
            b = _conn(target.url_b, target.ca, target.bob)
            continue
        lat.append(1000 * (time.perf_counter() - t0))
        ids.append(str(key.key_id))
    a.close()
    b.close()
    out.put({"latencies_ms": lat, "ids": ids, "errors": errors})


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


def run_workers(target: BenchTarget, seconds: float, workers: int, size: int) -> dict[str, Any]:
    """`workers` client processes loop enc_keys + dec_keys against `target` for `seconds`."""
    ctx = multiprocessing.get_context("spawn")
    ready, out = ctx.Barrier(workers), ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(target, seconds, size, ready, out), daemon=True)
        for _ in range(workers)
    ]
    for p in procs:
        p.start()
    try:
        results = [out.get(timeout=seconds + 120) for _ in procs]
    finally:
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
    lat = sorted(x for r in results for x in r["latencies_ms"])
    ids = [i for r in results for i in r["ids"]]
    errors: dict[str, int] = {}
    for r in results:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    return {
        "pairs": len(lat),
        "pairs_per_s": round(len(lat) / seconds, 1),
        "p50_ms": round(_percentile(lat, 0.50), 3),
        "p99_ms": round(_percentile(lat, 0.99), 3),
        "mean_ms": round(statistics.fmean(lat), 3) if lat else None,
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "duplicates": len(ids) - len(set(ids)),
    }


def listening_pids(port: int) -> list[int]:
    """The processes holding a TCP socket listening on `port` on this host (Linux /proc; empty
    elsewhere or when not allowed to look)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            if len(f) > 9 and f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{f[9]}]")
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                pids.append(int(proc.name))
    return pids


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU time the processes have used so far (exited ones count 0)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def _server_pids(target: BenchTarget) -> list[int]:
    ports = {urlsplit(u).port for u in (target.url_a, target.url_b)}
    return [pid for port in ports if port for pid in listening_pids(port)]


def run_measured(target: BenchTarget, seconds: float, workers: int, size: int) -> dict[str, Any]:
    """:func:`run_workers`, and the CPU time the two servers (the end nodes, or the bare
    servers) used meanwhile: a figure the machine's other load barely moves."""
    pids = _server_pids(target)
    before = cpu_seconds(pids)
    r = run_workers(target, seconds, workers, size)
    r["server_cpu_s"] = round(cpu_seconds(pids) - before, 3) if pids else None
    return r


def _cpu_ms_per_pair(r: dict[str, Any]) -> float | None:
    cpu = r.get("server_cpu_s")
    return round(1000 * cpu / r["pairs"], 3) if cpu is not None and r["pairs"] else None


def run_bench(directory: Path, seconds: float, workers: int, size: int = 256) -> dict[str, Any]:
    """The real demo pair alone (no bare server): pairs/s and latency."""
    return {
        "seconds": seconds,
        "workers": workers,
        "key_size_bits": size,
        **run_workers(load_target(directory), seconds, workers, size),
    }


# -- the bare server ------------------------------------------------------------------------------
def bare_app(container: bytes) -> Any:
    """An aiohttp application answering enc_keys and dec_keys with `container` (fixed JSON)."""
    from aiohttp import web

    async def keys(request: web.Request) -> web.Response:
        return web.Response(body=container, content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/v1/keys/{sae}/enc_keys", keys)
    app.router.add_get("/api/v1/keys/{sae}/dec_keys", keys)
    return app


async def _serve_bare(tls: ServerTls, ports: Any, stop: Any) -> None:
    from aiohttp import web

    container = json.dumps(key_container([FIXED_KEY])).encode()
    runner = web.AppRunner(bare_app(container), access_log=None, handle_signals=False)
    await runner.setup()
    ctx = server_context(Path(tls.ca_cert), Path(tls.cert), Path(tls.key))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    await web.SockSite(runner, sock, ssl_context=ctx).start()
    ports.put(int(sock.getsockname()[1]))
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, stop.wait)
    await runner.cleanup()


def _bare_main(tls: ServerTls, ports: Any, stop: Any) -> None:
    asyncio.run(_serve_bare(tls, ports, stop))  # the loop a node runs


@contextlib.contextmanager
def bare_servers(tls: tuple[ServerTls, ServerTls]) -> Iterator[tuple[str, str]]:
    """Two bare server processes (the master's end, the slave's end): their URLs."""
    ctx = multiprocessing.get_context("spawn")
    ports = ctx.Queue()
    stop = ctx.Event()
    procs = [ctx.Process(target=_bare_main, args=(t, ports, stop), daemon=True) for t in tls]
    for p in procs:
        p.start()
    try:
        urls = [f"https://127.0.0.1:{ports.get(timeout=30)}" for _ in procs]
        yield urls[0], urls[1]
    finally:
        stop.set()
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()


# -- relay time and the route ---------------------------------------------------------------------
def relay_times(target: BenchTarget, requests: int, hops: int | None) -> dict[str, Any]:
    """One client, one 256-bit key at a time: enc_keys latency (the relay); each key is then
    collected at the far end (not timed) so that nothing piles up there."""
    a = _conn(target.url_a, target.ca, target.alice)
    b = _conn(target.url_b, target.ca, target.bob)
    lat: list[float] = []
    errors = 0
    try:
        for _ in range(requests):
            t0 = time.perf_counter()
            _, key = _key(a, f"/api/v1/keys/{target.slave}/enc_keys?size=256")
            t1 = time.perf_counter()
            if key is None:
                errors += 1
                time.sleep(0.05)
                continue
            lat.append(1000 * (t1 - t0))
            _get(b, f"/api/v1/keys/{target.master}/dec_keys?key_ID={key.key_id}")
    finally:
        a.close()
        b.close()
    lat.sort()
    p50, p99 = _percentile(lat, 0.5), _percentile(lat, 0.99)
    return {
        "requests": requests,
        "errors": errors,
        "hops": hops,
        "p50_ms": round(p50, 2),
        "p99_ms": round(p99, 2),
        "p50_ms_per_hop": round(p50 / hops, 2) if hops else None,
        "p99_ms_per_hop": round(p99 / hops, 2) if hops else None,
    }


def route_status(target: BenchTarget) -> dict[str, Any]:
    """The master's node's status for the slave: route, hops, keys in stock, bottleneck rate."""
    a = _conn(target.url_a, target.ca, target.alice)
    try:
        st, body = _call(a, f"/api/v1/keys/{target.slave}/status")
    finally:
        a.close()
    if st != 200 or not isinstance(body, dict):
        return {"stored_key_count": 0, "route": None, "hops": None, "bottleneck_bps": None}
    ext = body.get("status_extension") or {}
    route = ext.get("route") or {}
    return {
        "stored_key_count": int(body.get("stored_key_count", 0)),
        "max_key_count": int(body.get("max_key_count", 0)),
        "route": route.get("nodes"),
        "hops": route.get("hops"),
        "bottleneck_bps": (ext.get("qkd_link") or {}).get("key_rate_bps"),
    }


def wait_for_stock(target: BenchTarget, keys: int, timeout: float) -> dict[str, Any]:
    """Until the route holds `keys` keys (or `timeout` s): the last status."""
    t0 = time.monotonic()
    while True:
        st = route_status(target)
        if st["stored_key_count"] >= keys or time.monotonic() - t0 > timeout:
            return {**st, "seconds_waited": round(time.monotonic() - t0, 1)}
        time.sleep(1.0)


# -- one comparison -------------------------------------------------------------------------------
def compare(
    info: dict[str, Any],
    seconds: float,
    workers: int,
    size: int,
    relay_requests: int,
    rounds: int = 1,
    master: str = "alice",
    slave: str = "bob",
) -> dict[str, Any]:
    """Bare and real, alternating `rounds` times (each `seconds`), then relay time and capacity."""
    real_t = target_from_info(info, master, slave)
    route = route_status(real_t)
    with bare_servers((_sae_tls(info, master), _sae_tls(info, slave))) as (url_a, url_b):
        bare_t = BenchTarget(url_a, url_b, real_t.ca, real_t.alice, real_t.bob, master, slave)
        bare_runs, real_runs = [], []
        for _ in range(rounds):
            bare_runs.append(run_measured(bare_t, seconds, workers, size))
            real_runs.append(run_measured(real_t, seconds, workers, size))
    bare, real = _merge(bare_runs), _merge(real_runs)
    for x in (bare, real):
        x["server_cpu_ms_per_pair"] = _cpu_ms_per_pair(x)
    cpu_real, cpu_bare = real["server_cpu_ms_per_pair"], bare["server_cpu_ms_per_pair"]
    relay = relay_times(real_t, relay_requests, route["hops"])
    after = route_status(real_t)
    bottleneck = after["bottleneck_bps"] or route["bottleneck_bps"]
    ratio = round(real["pairs_per_s"] / bare["pairs_per_s"], 3) if bare["pairs_per_s"] else None
    return {
        "topology": info.get("topology"),
        "route": route["route"],
        "hops": route["hops"],
        "seconds": seconds,
        "rounds": rounds,
        "workers": workers,
        "key_size_bits": size,
        "real": real,
        "bare": bare,
        "ratio_pairs_per_s": ratio,
        "ratio_p50_latency": round(real["p50_ms"] / bare["p50_ms"], 2) if bare["pairs"] else None,
        # the pairs/s ratio two CPU-bound servers would reach on equal CPU: bare CPU per pair
        # over real CPU per pair (the end nodes' processes, or the bare servers')
        "ratio_server_cpu": round(cpu_bare / cpu_real, 3) if cpu_real and cpu_bare else None,
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio is not None and ratio >= TARGET_RATIO,
        "relay_time": relay,
        "bottleneck_link_rate_bps": bottleneck,
        "call_capacity": route_capacity(bottleneck, route["hops"] or 1, real["pairs_per_s"]),
    }


def _merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    if len(runs) == 1:
        return runs[0]
    out: dict[str, Any] = {k: sum(r[k] for r in runs) for k in ("pairs", "errors", "duplicates")}
    cpu = [r.get("server_cpu_s") for r in runs]
    out["server_cpu_s"] = None if None in cpu else round(sum(c for c in cpu if c is not None), 3)
    out["pairs_per_s"] = round(statistics.fmean(r["pairs_per_s"] for r in runs), 1)
    for k in ("p50_ms", "p99_ms", "mean_ms"):  # the worst round (a conservative figure)
        out[k] = max((r[k] for r in runs if r[k] is not None), default=None)
    kinds: dict[str, int] = {}
    for r in runs:
        for k, v in r["error_kinds"].items():
            kinds[k] = kinds.get(k, 0) + v
    return {**out, "error_kinds": kinds, "per_round_pairs_per_s": [r["pairs_per_s"] for r in runs]}


# -- whole runs -----------------------------------------------------------------------------------
def bench_running_demo(
    directory: Path, seconds: float, workers: int, size: int, relay_requests: int, rounds: int
) -> dict[str, Any]:
    info = _demo_info(directory)
    info.setdefault("topology", "pair")
    wait_for_stock(target_from_info(info, "alice", "bob"), 2000, 60)  # refilled after a run
    return {
        **compare(info, seconds, workers, size, relay_requests, rounds),
        "network": f"running demo in {directory}",
    }


def bench_topology(
    topology: str,
    directory: Path | None,
    seconds: float,
    workers: int,
    size: int,
    relay_requests: int,
    rounds: int,
    fidelity: str | None,
    seed: int | None,
) -> dict[str, Any]:
    """Start `topology` (alice -> bob), wait until its route holds key for the run, compare."""
    from keyserver.network.launcher import Launcher
    from keyserver.network.plan import Options, make_plan
    from keyserver.topology import load_topology

    topo = load_topology(topology)
    d = directory or Path(tempfile.mkdtemp(prefix=f"qkd-bench-pair-{topo.name}-"))
    opts = Options(seed=seed, fidelity=fidelity, testing=seed is not None)
    launcher = Launcher(make_plan(d, topo, opts))
    try:
        launcher.lock()
        launcher.check_ports()
        launcher.prepare()
        launcher.start_all()
        launcher.wait_ready(timeout=180)
        info = launcher.info()
        # key for about 600 pairs a second over the whole run, or 90 % of the stock cap
        want = min(int(0.9 * opts.max_key_count), int(2 * 600 * seconds * rounds))
        stock = wait_for_stock(target_from_info(info, "alice", "bob"), want, 240)
        print(
            json.dumps(
                {
                    "event": "bench_pair_ready",
                    "topology": topo.name,
                    "stock_keys": stock["stored_key_count"],
                    "seconds_waited": stock["seconds_waited"],
                }
            ),
            file=sys.stderr,
            flush=True,
        )
        result = compare(info, seconds, workers, size, relay_requests, rounds)
    finally:
        launcher.stop()
        launcher.unlock()
        if directory is None:
            shutil.rmtree(d, ignore_errors=True)
    return {
        **result,
        "fidelity": fidelity or "the topology's",
        "stock_keys_at_start": stock["stored_key_count"],
    }


def summary_lines(r: dict[str, Any]) -> list[str]:
    """The human-readable form of one comparison."""
    real, bare, rt = r["real"], r["bare"], r["relay_time"]
    lines = [
        f"{r['topology']}: route {' -> '.join(r['route'] or ['?'])} ({r['hops']} hops)",
        f"  real  {real['pairs_per_s']:8.1f} pairs/s  p50 {real['p50_ms']:7.2f} ms  "
        f"p99 {real['p99_ms']:7.2f} ms  errors {real['errors']}  duplicates {real['duplicates']}",
        f"  bare  {bare['pairs_per_s']:8.1f} pairs/s  p50 {bare['p50_ms']:7.2f} ms  "
        f"p99 {bare['p99_ms']:7.2f} ms",
        f"  ratio real/bare {r['ratio_pairs_per_s']} (target >= {r['target_ratio']}: "
        f"{'met' if r['meets_target'] else 'NOT met'})",
        f"  server CPU per pair: real {real.get('server_cpu_ms_per_pair')} ms, bare "
        f"{bare.get('server_cpu_ms_per_pair')} ms; ratio bare/real {r.get('ratio_server_cpu')}"
        " (the end nodes' processes against the bare servers')",
        f"  relay time (one 256-bit key, one client): p50 {rt['p50_ms']} ms, p99 {rt['p99_ms']}"
        f" ms; per hop p50 {rt['p50_ms_per_hop']} ms, p99 {rt['p99_ms_per_hop']} ms",
    ]
    for mode, c in r["call_capacity"].items():
        lines.append(
            f"  {mode} calls: {c['calls']} (link bound {c['calls_link_bound']} at "
            f"{r['bottleneck_link_rate_bps'] / 1e6:.2f} Mbit/s, KMS bound {c['calls_kms_bound']}; "
            f"limited by {c['limited_by']})"
        )
    return lines
