"""``qkd-keyserver bench``: key-pair throughput and latency against a running demo pair.

Each worker process holds one keep-alive mTLS connection to KME A (as alice) and one to KME B (as
bob) and loops: enc_keys at A, then dec_keys at B for the key it got, checking both copies match.
A pair's latency is from sending enc_keys to receiving dec_keys.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from keyserver.pki.tls import client_context


@dataclass(frozen=True)
class BenchTarget:
    url_a: str
    url_b: str
    ca: str
    alice: tuple[str, str]
    bob: tuple[str, str]


def load_target(directory: Path) -> BenchTarget:
    path = directory / "demo.json"
    try:
        info = json.loads(path.read_text())
    except OSError:
        raise SystemExit(
            f"{path} not found: start `qkd-keyserver demo --dir {directory}` first"
        ) from None
    s = info["saes"]
    return BenchTarget(
        s["alice"]["kme_url"], s["bob"]["kme_url"], info["ca_cert"],
        (s["alice"]["cert"], s["alice"]["key"]), (s["bob"]["cert"], s["bob"]["key"]),
    )


def _conn(url: str, ca: str, cert: tuple[str, str]) -> http.client.HTTPSConnection:
    u = urlsplit(url)
    ctx = client_context(Path(ca), Path(cert[0]), Path(cert[1]))
    return http.client.HTTPSConnection(u.hostname or "", u.port or 443, context=ctx, timeout=10)


def _call(conn: http.client.HTTPSConnection, path: str) -> tuple[int, Any]:
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    return resp.status, json.loads(body) if body else None


def _worker(target: BenchTarget, start_at: float, deadline: float, size: int) -> dict[str, Any]:
    a = _conn(target.url_a, target.ca, target.alice)
    b = _conn(target.url_b, target.ca, target.bob)
    a.connect()
    b.connect()
    time.sleep(max(0.0, start_at - time.time()))
    lat: list[float] = []
    ids: list[str] = []
    errors: dict[str, int] = {}

    def err(kind: str) -> None:
        errors[kind] = errors.get(kind, 0) + 1

    while time.time() < deadline:
        t0 = time.perf_counter()
        try:
            st, enc = _call(a, f"/api/v1/keys/bob/enc_keys?size={size}")
            if st != 200:
                err(f"enc_{st}")
                time.sleep(0.01)
                continue
            key = enc["keys"][0]
            st, dec = _call(b, f"/api/v1/keys/alice/dec_keys?key_ID={key['key_ID']}")
            if st != 200:
                err(f"dec_{st}")
                continue
            if dec["keys"][0] != key:
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
        ids.append(key["key_ID"])
    a.close()
    b.close()
    return {"latencies_ms": lat, "ids": ids, "errors": errors}


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


def run_bench(directory: Path, seconds: float, workers: int, size: int = 256) -> dict[str, Any]:
    target = load_target(directory)
    ctx = multiprocessing.get_context("spawn")
    start_at = time.time() + 1.5  # let the workers import and connect first
    deadline = start_at + seconds
    with ctx.Pool(workers) as pool:
        results = pool.starmap(_worker, [(target, start_at, deadline, size)] * workers)
    lat = sorted(x for r in results for x in r["latencies_ms"])
    ids = [i for r in results for i in r["ids"]]
    errors: dict[str, int] = {}
    for r in results:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    return {
        "seconds": seconds,
        "workers": workers,
        "key_size_bits": size,
        "pairs": len(lat),
        "pairs_per_s": round(len(lat) / seconds, 1),
        "p50_ms": round(_percentile(lat, 0.50), 3),
        "p99_ms": round(_percentile(lat, 0.99), 3),
        "mean_ms": round(statistics.fmean(lat), 3) if lat else None,
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "duplicates": len(ids) - len(set(ids)),
    }
