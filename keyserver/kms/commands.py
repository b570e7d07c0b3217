"""``qkd-keyserver node``: one KMS node."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path


async def _run_node(config_path: Path) -> int:
    import asyncio  # here: the other subcommands do not need it

    from keyserver.kms.node import KmsNode
    from keyserver.kms.nodeconfig import ConfigError, load_node_config
    from keyserver.kms.storedb import StoreError

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
    import asyncio  # here: the other subcommands do not need it

    from keyserver.coredumps import forbid_core_dumps
    from keyserver.jsonlog import setup_logging

    forbid_core_dumps()  # the process holds keys: none in a core file
    setup_logging(os.environ.get("QKD_LOG_LEVEL", "INFO").upper())
    # the standard event loop, not uvloop: under load (connection timeouts to a busy module)
    # uvloop with aiohttp's connector leaves a socket's descriptor closed under a live transport
    # (MagicStack/uvloop#653, aio-libs/aiohttp#10506, open upstream); the next connection on
    # that descriptor raised "File descriptor N is used by transport" and stopped a
    # china-backbone node (docs/network.md §6)
    return asyncio.run(_run_node(Path(args.config)))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    n = sub.add_parser("node", help="one KMS node of a QKD network, configured by a TOML file")
    n.add_argument("--config", required=True, help="node config (qkd-keyserver network writes one)")
    n.set_defaults(func=_cmd_node)
