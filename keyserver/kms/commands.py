"""``qkd-keyserver node`` (one KMS node) and ``bench pair`` (key pairs/s, real vs bare)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path


async def _run_node(config_path: Path) -> int:
    from keyserver.kms.node import KmsNode
    from keyserver.kms.nodeconfig import ConfigError, load_node_config
    from keyserver.kms.nodestore import StoreError

    try:
        config = load_node_config(config_path)
    except ConfigError as e:
        print(f"qkd-keyserver node: {e}", file=sys.stderr)
        return 2
    node = KmsNode(config)
    try:
        await node.start()
    except (StoreError, OSError) as e:
        print(f"qkd-keyserver node: cannot start: {e}", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(s, stop.set)
    stopped = asyncio.create_task(stop.wait())
    failed = asyncio.create_task(node.failed.wait())
    await asyncio.wait({stopped, failed}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    failed.cancel()
    await node.stop()
    if node.failed.is_set():
        print("qkd-keyserver node: a background task failed (see the log)", file=sys.stderr)
        return 1
    return 0


def _cmd_node(args: argparse.Namespace) -> int:
    from keyserver.coredumps import forbid_core_dumps
    from keyserver.jsonlog import setup_logging

    forbid_core_dumps()  # the process holds keys: none in a core file
    setup_logging(os.environ.get("QKD_LOG_LEVEL", "INFO").upper())
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_run_node(Path(args.config)))
    return uvloop.run(_run_node(Path(args.config)))


def _cmd_bench(args: argparse.Namespace) -> int:
    from keyserver.kms.bench import bench_running_demo, bench_topology, summary_lines

    if args.seconds <= 0 or args.workers < 1 or args.rounds < 1 or args.relay_requests < 1:
        print("qkd-keyserver bench pair: --seconds must be > 0, --workers, --rounds and "
              "--relay-requests >= 1", file=sys.stderr)
        return 2
    if args.dir is not None:
        results = [bench_running_demo(Path(args.dir).resolve(), args.seconds, args.workers,
                                      args.size, args.relay_requests, args.rounds)]
    else:
        results = [bench_topology(t, None, args.seconds, args.workers, args.size,
                                  args.relay_requests, args.rounds, args.fidelity, args.seed)
                   for t in args.topology.split(",")]
    if args.json:
        print(json.dumps({"comparisons": results, "command": " ".join(["qkd-keyserver",
                                                                       *sys.argv[1:]])}))
    else:
        for r in results:
            print("\n".join(summary_lines(r)))
    return 0 if all(r["real"]["errors"] == 0 and r["real"]["duplicates"] == 0
                    for r in results) else 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    n = sub.add_parser("node", help="one KMS node of a QKD network, configured by a TOML file")
    n.add_argument("--config", required=True, help="node config (qkd-keyserver network writes one)")
    n.set_defaults(func=_cmd_node)

    from keyserver.network.commands import command_group

    bench = command_group(sub, "bench", "benchmarks (bench network, bench pair, bench link)")
    b = bench.add_parser(
        "pair", help="ETSI 014 key pairs/s through real KMS nodes beside a bare mTLS server"
    )
    b.add_argument("--dir", default=None,
                   help="a running demo's directory (reads demo.json); without it the bench "
                   "starts --topology itself")
    b.add_argument("--topology", default="pair",
                   help="topologies to start, comma-separated: pair (one hop), line5 (four "
                   "hops), or a TOML file (default pair)")
    b.add_argument("--fidelity", choices=("emulated", "physics"), default="emulated",
                   help="QKD links of the network the bench starts (default emulated)")
    b.add_argument("--seconds", type=float, default=10.0,
                   help="how long to draw key pairs, per round and server (default 10)")
    b.add_argument("--rounds", type=int, default=1,
                   help="bare and real runs alternate this many times (default 1)")
    b.add_argument("--workers", type=int, default=6, help="client processes")
    b.add_argument("--size", type=int, default=256, help="key size in bits")
    b.add_argument("--relay-requests", type=int, default=200,
                   help="one-at-a-time enc_keys for the relay time (default 200)")
    b.add_argument("--seed", type=int, default=None, help="seed the QKD links (testing)")
    b.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    b.set_defaults(func=_cmd_bench)
