"""``qkd-keyserver bench network``: what a network costs, how fast it is ready, what it carries.

**Footprint** (always, first): the time from the launcher's start until a key can be relayed
between the two farthest SAEs (:meth:`Launcher.readiness`), then the memory (proportional set
size, ``Pss:`` of ``/proc/PID/smaps_rollup``, per kind: node, module, zygote) and the CPU of
every process over ``--seconds`` while nothing but key production goes on (``utime + stime``
deltas of ``/proc/PID/stat``, in cores: robust to other load on the machine). ``--footprint``
stops there; the network is started as ``qkd-keyserver network`` starts it (its stock cap).

**Capacity** (without ``--footprint``): starts the topology (seeded, link-key stock capped at a
few seconds of demand so that stock cannot hide a rate shortfall), waits until the route
carries key, then:

1. **CPU**: the CPU time of every module and node process over ``--seconds`` with no load
   (the network paced in real time), as a share of the machine's cores;
2. **relay time**: enc_keys latency of single 256-bit keys from the master SAE's node to the
   slave's, one at a time;
3. **OTP calls**: steps of N concurrent call demands; a call's initiator fetches pad for both
   directions (docs/crypto.md: 12 kbit/s Opus + 64-bit tags = 15.2 kbit/s per direction), so
   each call asks for 2 x 15,200 bits every second. A step is *sustained* if every request of
   its last ``--seconds`` is served before the next one is due;
4. **AES calls**: the same with one 256-bit key per direction per 10-second epoch (2 keys per
   call every 10 s);

and reports, beside each measured capacity, the bound from the bottleneck link's key rate
measured in the same run (rate / demand per call).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import json
import os
import signal
import statistics
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from keyserver.network.launcher import Launcher, LaunchError, Readiness
from keyserver.network.plan import Options, make_plan
from keyserver.network.status import collect, summarise
from keyserver.pki.tls import client_context
from keyserver.topology import load_topology

OTP_BITS_PER_DIRECTION = 15_200  # per second: 12 kbit/s Opus + 50 frames/s x 64-bit tags
AES_KEY_BITS = 256
AES_EPOCH_S = 10.0
CLK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK
    except (OSError, IndexError, ValueError):
        return 0.0


def pss_kb(pid: int) -> int:
    """The proportional set size of process `pid` in KiB (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _processes(launcher: Launcher) -> dict[str, tuple[str, int]]:
    """name -> (kind, pid) of every running child and of the fork servers ("zygote")."""
    procs = {
        c.name: (c.kind, c.proc.pid)
        for c in launcher.children.values()
        if c.proc is not None and c.proc.poll() is None
    }
    for kind, pid in launcher.zygote_pids().items():
        procs[f"zygote-{kind}"] = ("zygote", pid)
    return procs


def measure_memory(launcher: Launcher) -> dict[str, Any]:
    """Total and per-kind PSS (MB), and the largest process of each kind."""
    by_kind: dict[str, list[int]] = {}
    for kind, pid in _processes(launcher).values():
        by_kind.setdefault(kind, []).append(pss_kb(pid))
    mb = 1024.0
    return {
        "total_pss_mb": round(sum(sum(v) for v in by_kind.values()) / mb, 1),
        "by_kind": {
            k: {
                "processes": len(v),
                "pss_mb": round(sum(v) / mb, 1),
                "mean_pss_mb": round(sum(v) / len(v) / mb, 1),
                "max_pss_mb": round(max(v) / mb, 1),
            }
            for k, v in sorted(by_kind.items())
        },
    }


SERIES_WINDOW_S = 10.0  # --settle: the CPU of the network in windows of this length until then


def measure_cpu(launcher: Launcher, seconds: float) -> dict[str, Any]:
    procs = _processes(launcher)
    t0 = time.monotonic()
    before = {n: _cpu_seconds(pid) for n, (_, pid) in procs.items()}
    time.sleep(seconds)
    wall = time.monotonic() - t0
    used = {n: _cpu_seconds(pid) - before[n] for n, (_, pid) in procs.items()}
    by_kind: dict[str, float] = {}
    for n, (kind, _) in procs.items():
        by_kind[kind] = by_kind.get(kind, 0.0) + used[n]
    cores = os.cpu_count() or 1
    per = {k: [used[n] for n, (kind, _) in procs.items() if kind == k] for k in by_kind}
    return {
        "seconds": round(wall, 1),
        "processes": len(procs),
        "cores": cores,
        "total_cores": round(sum(used.values()) / wall, 3),
        "by_kind_cores": {k: round(v / wall, 3) for k, v in sorted(by_kind.items())},
        "max_percent_of_one_core": {k: round(100 * max(v) / wall, 2) for k, v in per.items() if v},
        "cpu_percent_of_one_core": round(100 * sum(used.values()) / wall, 1),
        "machine_share_percent": round(100 * sum(used.values()) / wall / cores, 1),
        "modules_percent_of_one_core": round(100 * by_kind.get("module", 0.0) / wall, 1),
        "nodes_percent_of_one_core": round(100 * by_kind.get("node", 0.0) / wall, 1),
    }


@dataclass
class Sae:
    url: str
    ctx: Any


def _client(info: dict[str, Any], sae: str) -> aiohttp.ClientSession:
    s = info["saes"][sae]
    ctx = client_context(Path(s["ca_cert"]), Path(s["cert"]), Path(s["key"]))
    return aiohttp.ClientSession(
        base_url=s["kme_url"],
        connector=aiohttp.TCPConnector(ssl=ctx, limit=64),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=30.0, sock_read=30.0),
    )


async def _relay_times(info: dict[str, Any], src: str, dst: str, n: int) -> dict[str, Any]:
    lat: list[float] = []
    errors = 0
    first_error = None
    async with _client(info, src) as c:
        for _ in range(n):
            t0 = time.perf_counter()
            async with c.post(f"/api/v1/keys/{dst}/enc_keys", json={"number": 1, "size": 256}) as r:
                text = await r.text()
            if r.status == 200:
                lat.append(1000 * (time.perf_counter() - t0))
            else:
                errors += 1
                first_error = first_error or text[:300]
                await asyncio.sleep(0.2)
    lat.sort()
    return {
        "requests": n,
        "errors": errors,
        "first_error": first_error,
        "p50_ms": round(statistics.median(lat), 1) if lat else None,
        "p90_ms": round(lat[int(0.9 * (len(lat) - 1))], 1) if lat else None,
        "mean_ms": round(statistics.fmean(lat), 1) if lat else None,
    }


async def _step(
    info: dict[str, Any],
    src: str,
    dst: str,
    calls: int,
    period: float,
    number: int,
    size: int,
    seconds: float,
) -> dict[str, Any]:
    """`calls` loops, each asking for `number` keys of `size` bits every `period` s."""
    ok = late = failed = 0
    lat: list[float] = []
    start = time.monotonic()
    measure_from = start + max(0.0, seconds - max(seconds / 2, period))
    stop = start + seconds

    async def call(i: int, c: aiohttp.ClientSession) -> None:
        nonlocal ok, late, failed
        due = start + period * i / max(calls, 1)
        while due < stop:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            t0 = time.monotonic()
            try:
                async with c.post(
                    f"/api/v1/keys/{dst}/enc_keys", json={"number": number, "size": size}
                ) as r:
                    await r.read()
                good = r.status == 200
            except (aiohttp.ClientError, TimeoutError):
                good = False
            t1 = time.monotonic()
            if t0 >= measure_from:
                if not good:
                    failed += 1
                elif t1 > due + period:
                    late += 1
                else:
                    ok += 1
                    lat.append(1000 * (t1 - t0))
            due += period

    async with _client(info, src) as c:
        await asyncio.gather(*(call(i, c) for i in range(calls)))
    return {
        "calls": calls,
        "ok": ok,
        "late": late,
        "failed": failed,
        "sustained": ok > 0 and late == 0 and failed == 0,
        "p50_ms": round(statistics.median(lat), 1) if lat else None,
    }


async def _wait_route(info: dict[str, Any], src: str, dst: str, limit: float) -> float | None:
    """Seconds until the route holds key for an OTP second of one call, or None."""
    t0 = time.monotonic()
    async with _client(info, src) as c:
        while time.monotonic() - t0 < limit:
            try:
                async with c.get(f"/api/v1/keys/{dst}/status") as r:
                    st = await r.json(content_type=None)
                if st["stored_key_count"] * 256 >= 4 * OTP_BITS_PER_DIRECTION:
                    return round(time.monotonic() - t0, 1)
            except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError):
                pass
            await asyncio.sleep(2.0)
    return None


def _route_rate(info: dict[str, Any], launcher: Launcher, src: str, dst: str) -> dict[str, Any]:
    assert launcher.state is not None
    node = info["saes"][src]["node"]
    st = launcher.state.get(info["nodes"][node]["node_url"])
    summary = summarise(info, collect(info, launcher.state))
    pair = (st or {}).get("pairs", {}).get(f"{src}->{dst}", {})
    routes = pair.get("routes") or []
    links: list[str] = []
    for r in routes:
        for u, v in itertools.pairwise(r):
            links += [lid for lid, x in info["links"].items() if {x["a"], x["b"]} == {u, v}]
    rates = {lid: summary["links"][lid]["key_rate_bps"] for lid in links}
    good = [v for v in rates.values() if isinstance(v, int | float)]
    return {"route": routes, "link_rates_bps": rates, "bottleneck_bps": min(good) if good else None}


async def _capacity(
    info: dict[str, Any],
    src: str,
    dst: str,
    seconds: float,
    mode: str,
    start_calls: int,
    grow: float,
    limit: int,
) -> tuple[int, list[dict[str, Any]]]:
    best = 0
    steps = []
    calls = start_calls
    while calls <= limit:
        if mode == "otp":
            step = await _step(info, src, dst, calls, 1.0, 2, OTP_BITS_PER_DIRECTION, seconds)
        else:
            step = await _step(
                info, src, dst, calls, AES_EPOCH_S, 2, AES_KEY_BITS, max(seconds, 2 * AES_EPOCH_S)
            )
        steps.append(step)
        print(
            json.dumps({"event": "bench_step", "mode": mode, **step}), file=sys.stderr, flush=True
        )
        if not step["sustained"]:
            break
        best = calls
        calls = max(calls + 1, int(calls * grow))
    return best, steps


def _options(args: argparse.Namespace) -> Options:
    extra: dict[str, Any] = {}
    fidelity = getattr(args, "fidelity", None)
    if fidelity is not None:
        if "fidelity" not in {f.name for f in dataclasses.fields(Options)}:
            raise LaunchError("this version has no link fidelities: leave out --fidelity")
        extra["fidelity"] = fidelity
    if getattr(args, "footprint", False):  # as `qkd-keyserver network` starts it
        return Options(seed=args.seed, **extra)
    # stock capped at ~4 s of one OTP call per stream: it cannot hide a rate shortfall
    return Options(seed=args.seed, max_key_count=512, testing=True, **extra)


def footprint(
    launcher: Launcher, seconds: float, wait: float, settle: float = 0.0
) -> dict[str, Any]:
    """Start the launcher's network; time to answer and to the first key on the farthest
    route; then memory and CPU over `seconds` while the links fill up after the first key,
    and again `settle` seconds later (the launcher must be locked and prepared)."""
    prepared = time.monotonic() - launcher.started
    launcher.start_all()
    spawned = time.monotonic() - launcher.started
    launcher.wait_ready(timeout=wait)
    answered = time.monotonic() - launcher.started
    print(
        json.dumps({"event": "bench_network_answering", "seconds": round(answered, 1)}),
        file=sys.stderr,
        flush=True,
    )
    last: list[Readiness] = []

    def progress(r: Readiness) -> None:
        last[:] = [r]
        print(
            json.dumps(
                {
                    "event": "bench_progress",
                    "seconds": round(r.seconds, 1),
                    "links_keyed": r.links_keyed,
                    "links": r.links,
                    "why": r.why,
                }
            ),
            file=sys.stderr,
            flush=True,
        )

    try:
        ready = launcher.wait_call_ready(timeout=wait, progress=progress, interval=2.0)
    except LaunchError as e:  # still measure what the network costs, and say why
        if launcher.exited():
            raise
        ready = None
        print(
            json.dumps({"event": "bench_no_first_key", "error": str(e)}),
            file=sys.stderr,
            flush=True,
        )
    out: dict[str, Any] = {
        "pki_and_configs_s": round(prepared, 1),
        "processes_started_s": round(spawned, 1),
        "processes_answering_s": round(answered, 1),
        "first_key_s": round(ready.seconds, 1) if ready else None,
        "links_keyed_at_end_of_wait": None
        if ready or not last
        else f"{last[0].links_keyed}/{last[0].links}",
        "first_key_route": {
            "from": ready.pair.master,
            "to": ready.pair.slave,
            "hops": len(ready.route) - 1,
            "nodes": list(ready.route),
        }
        if ready
        else None,
    }
    out["idle_cpu"] = measure_cpu(launcher, seconds)
    out["memory"] = measure_memory(launcher)
    if settle > 0:  # the links full: what the network costs when nothing happens
        series = []  # CPU every 10 s until then: how long the start's load lasts
        end = time.monotonic() + settle
        while (left := end - time.monotonic()) > 1.0:
            c = measure_cpu(launcher, min(SERIES_WINDOW_S, left))
            series.append([round(time.monotonic() - launcher.started, 1), c["total_cores"]])
        out["cpu_series"] = series
        out["settled_after_s"] = round(time.monotonic() - launcher.started, 1)
        out["settled_cpu"] = measure_cpu(launcher, seconds)
        out["settled_memory"] = measure_memory(launcher)
    return out


def run_bench_network(args: argparse.Namespace) -> int:
    prog = "qkd-keyserver bench network"
    topo = load_topology(args.topology)
    directory = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="qkd-bench-"))
    try:
        opts = _options(args)
    except LaunchError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    launcher = Launcher(make_plan(directory, topo, opts))

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # the network is stopped below, as on Ctrl-C

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        launcher.lock()
        launcher.check_ports()
        launcher.prepare()
        fp = footprint(launcher, args.seconds, args.wait, getattr(args, "settle", 0.0))
        fp.update(
            {
                "topology": topo.name,
                "nodes": len(topo.nodes),
                "links": len(topo.links),
                "fidelity": getattr(args, "fidelity", None) or "topology default",
                "command": " ".join(["qkd-keyserver", "bench", "network", *sys.argv[3:]])
                if sys.argv[1:3] == ["bench", "network"]
                else None,
            }
        )
        print(json.dumps({"event": "bench_footprint", **fp}), file=sys.stderr, flush=True)
        if getattr(args, "footprint", False):
            _print_footprint(fp, args.json)
            return 0
        info = launcher.info()
        cpu = fp["idle_cpu"]  # the network paced in real time, no load
        waited = asyncio.run(_wait_route(info, args.src, args.dst, args.wait))
        print(
            json.dumps({"event": "bench_route", "seconds_waited": waited}),
            file=sys.stderr,
            flush=True,
        )
        if waited is None:
            raise LaunchError(
                f"no route from {args.src} to {args.dst} with key after "
                f"{args.wait:g} s (the links have not produced key yet)"
            )
        relay = asyncio.run(_relay_times(info, args.src, args.dst, 30))
        rate = _route_rate(info, launcher, args.src, args.dst)
        otp, otp_steps = asyncio.run(
            _capacity(info, args.src, args.dst, args.seconds, "otp", 1, 1.5, 64)
        )
        rate_after = _route_rate(info, launcher, args.src, args.dst)
        aes, aes_steps = asyncio.run(
            _capacity(info, args.src, args.dst, args.seconds, "aes", 25, 2.0, 3200)
        )
    except LaunchError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    finally:
        launcher.stop()
        launcher.unlock()
    bott = rate_after["bottleneck_bps"] or rate["bottleneck_bps"]
    otp_demand = 2 * OTP_BITS_PER_DIRECTION + 8 * 32  # + one-time MAC key per request and hop
    aes_demand = (2 * AES_KEY_BITS + 8 * 32) / AES_EPOCH_S
    result = {
        "topology": topo.name,
        "from": args.src,
        "to": args.dst,
        "route": rate_after["route"] or rate["route"],
        "hops": max((len(r) - 1 for r in (rate_after["route"] or rate["route"])), default=None),
        "network_cpu_idle": cpu,
        "relay_time_256bit": relay,
        "bottleneck_link_rate_bps": bott,
        "link_rates_bps": rate_after["link_rates_bps"],
        "otp_calls_sustained": otp,
        "otp_calls_bound": round(bott / otp_demand, 2) if bott else None,
        "aes_calls_sustained": aes,
        "aes_calls_bound": round(bott / aes_demand) if bott else None,
        "otp_steps": otp_steps,
        "aes_steps": aes_steps,
        "command": f"qkd-keyserver bench network --topology {args.topology} --seconds "
        f"{args.seconds:g}",
    }
    result["footprint"] = fp
    if args.json:
        print(json.dumps(result))
    else:
        for k in (
            "topology",
            "footprint",
            "route",
            "hops",
            "network_cpu_idle",
            "relay_time_256bit",
            "bottleneck_link_rate_bps",
            "otp_calls_sustained",
            "otp_calls_bound",
            "aes_calls_sustained",
            "aes_calls_bound",
        ):
            print(f"{k:>26}: {result[k]}")
    return 0


def _print_footprint(fp: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(fp))
        return
    mem, cpu = fp["memory"], fp["idle_cpu"]
    lines = [
        f"topology {fp['topology']} ({fp['nodes']} nodes, {fp['links']} links), fidelity "
        f"{fp['fidelity']}",
        f"  PKI and configs written     {fp['pki_and_configs_s']} s",
        f"  processes started           {fp['processes_started_s']} s",
        f"  processes answering after   {fp['processes_answering_s']} s",
        f"  first key, farthest route   {fp['first_key_s']} s "
        + (
            f"({fp['first_key_route']['from']} -> {fp['first_key_route']['to']}, "
            f"{fp['first_key_route']['hops']} hops)"
            if fp["first_key_route"]
            else ""
        ),
        f"  memory (PSS)                {mem['total_pss_mb'] / 1024:.2f} GB",
    ]
    for k, v in mem["by_kind"].items():
        lines.append(
            f"    {k:<8} {v['processes']:>4} x {v['mean_pss_mb']:>6.1f} MB "
            f"(max {v['max_pss_mb']:.1f}) = {v['pss_mb'] / 1024:.2f} GB"
        )
    if fp.get("cpu_series"):
        lines += textwrap.wrap(
            "CPU every 10 s until settled (s after start: cores) "
            + ", ".join(f"{t:.0f}: {c:.2f}" for t, c in fp["cpu_series"]),
            width=88,
            initial_indent="  ",
            subsequent_indent="    ",
        )
    for title, c in (
        ("after the first key, links filling", cpu),
        (f"settled ({fp.get('settled_after_s')} s after start)", fp.get("settled_cpu")),
    ):
        if not c:
            continue
        lines.append(f"  CPU {title}, over {c['seconds']} s: {c['total_cores']:.3f} cores")
        for k, v in c["by_kind_cores"].items():
            lines.append(
                f"    {k:<8} {v:.3f} cores (busiest process "
                f"{c['max_percent_of_one_core'].get(k, 0):.2f} % of a core)"
            )
    print("\n".join(lines))
