"""`qkd-keyserver network status` through a launcher imports only what it uses: the socket and
the rendering, no asyncio, TLS, HTTP client, cryptography, aiohttp, networkx or numpy (its
start is most of its time); each command builds only its layer's parser."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from keyserver.cli import ALL_LAYERS, LAYERS, build_parser, layers_for
from keyserver.network.statuscache import CachePolicy
from keyserver.network.statussocket import StatusSocket

HEAVY = ("aiohttp", "asyncio", "cryptography", "http.client", "networkx", "numpy", "ssl")

PROBE = f"""
import json, sys
from keyserver.cli import build_parser, main
rc = main(["network", "status", "--dir", sys.argv[1]])
status = sorted(m for m in {HEAVY!r} if m in sys.modules)
build_parser()  # what --help builds: every layer's subcommands
print(json.dumps({{"rc": rc, "status": status,
                  "help": sorted(m for m in {HEAVY!r} if m in sys.modules)}}))
"""


def commands(parser: object) -> set[str]:
    for action in parser._actions:  # type: ignore[attr-defined]
        if action.choices is not None and action.dest == "command":
            return set(action.choices)
    return set()


def test_each_command_is_registered_by_the_layers_the_table_names() -> None:
    seen: set[str] = set()
    for i, layer in enumerate(ALL_LAYERS):
        added = commands(build_parser(ALL_LAYERS[: i + 1])) - seen
        assert added and all(LAYERS[c] == (layer,) for c in added), (layer, added)
        seen |= added
    assert seen == set(LAYERS)
    for c in LAYERS:
        assert c in commands(build_parser(layers_for([c, "--help"])))
    assert layers_for([]) == layers_for(["--help"]) == layers_for(["nod"]) == ALL_LAYERS


def test_network_status_through_the_launcher_imports_no_heavy_module(tmp_path: Path) -> None:
    (tmp_path / "network.json").write_text(json.dumps({"topology": "t", "nodes": {}, "links": {}}))
    summary = {
        "topology": "t",
        "links": {
            "a-b": {
                "a": "a",
                "b": "b",
                "distance_km": 5,
                "up": True,
                "reasons": [],
                "alarm": False,
                "key_rate_bps": 41000.0,
                "qber": 0.02,
                "stock_bits": {"a": 8192, "b": 8192},
            }
        },
        "nodes": {"a": {"up": True}, "b": {"up": True}},
        "pairs": {},
    }
    server = StatusSocket(tmp_path, lambda: summary, CachePolicy(linger_s=0.0))
    try:
        done = subprocess.run(
            [sys.executable, "-c", PROBE, str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    finally:
        server.close()
    *shown, last = done.stdout.strip().splitlines()
    got = json.loads(last)
    assert got["rc"] == 0
    assert shown[0].startswith("t: 2/2 nodes answering, 1/1 links up") and "(as of" in shown[0]
    assert any(line.startswith("a-b ") and "41.0 kb/s" in line for line in shown)
    assert got["status"] == []  # asked the launcher: nothing heavy
    assert got["help"] == []  # every layer's parser: still nothing heavy
