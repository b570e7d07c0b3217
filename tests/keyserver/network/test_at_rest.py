"""No delivered key at rest: after a network relayed keys and both SAEs collected them, no file
under the network's directory holds any 64-bit window of any of them (raw, base64 or hex), after a
SIGKILL of every process and after a clean stop.

    a --- b --- c      alice at a, carol at b (one hop), bob at c (two hops)
"""

from __future__ import annotations

import base64
import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from tests.support.network_fixtures import RunningNetwork, running_network
from tests.support.node_fixtures import topology

pytestmark = pytest.mark.timeout(240)

LINE = """
[[nodes]]
id = "a"
[[nodes]]
id = "b"
[[nodes]]
id = "c"
[[links]]
a = "a"
b = "b"
distance_km = 10
[[links]]
a = "b"
b = "c"
distance_km = 10
[[saes]]
id = "alice"
node = "a"
[[saes]]
id = "carol"
node = "b"
[[saes]]
id = "bob"
node = "c"
"""

_B64_RUN = re.compile(rb"[A-Za-z0-9+/]{12,}")
_HEX_RUN = re.compile(rb"[0-9a-fA-F]{16,}")


def _windows56(keys: list[bytes]) -> np.ndarray:
    """Every 56-bit window, at every bit offset, of every key. A 64-bit window of a key found at
    any bit offset of a file contains a byte-aligned 7-byte run of the file equal to one of
    these, so searching these finds every 64-bit window (and a little more)."""
    out: set[int] = set()
    mask = (1 << 56) - 1
    for k in keys:
        n, total = int.from_bytes(k, "big"), 8 * len(k)
        out |= {(n >> (total - 56 - i)) & mask for i in range(total - 56 + 1)}
    return np.array(sorted(out), dtype=np.uint64)


def _hits(blob: bytes, windows: np.ndarray) -> int:
    if len(blob) < 7:
        return 0
    a = np.frombuffer(blob, dtype=np.uint8).astype(np.uint64)
    n = len(a) - 6
    v = np.zeros(n, dtype=np.uint64)
    for j in range(7):
        v = (v << np.uint64(8)) | a[j : j + n]
    return int(np.isin(v, windows).sum())


def _decodings(data: bytes) -> list[bytes]:
    """The file itself, every base64 run decoded at each alignment, every hex run decoded."""
    out = [data]
    for m in _B64_RUN.finditer(data):
        run = m.group()
        for off in range(4):
            part = run[off:]
            part = part[: len(part) - len(part) % 4]
            if part:
                out.append(base64.b64decode(part))
    for m in _HEX_RUN.finditer(data):
        run = m.group()
        for off in range(2):
            part = run[off:]
            out.append(bytes.fromhex(part[: len(part) - len(part) % 2].decode()))
    return out


def key_hits(directory: Path, keys: list[bytes]) -> dict[str, int]:
    """Files under `directory` holding key bits, with the number of hits."""
    windows = _windows56(keys)
    found: dict[str, int] = {}
    for f in sorted(directory.rglob("*")):
        if not f.is_file() or f.is_symlink():
            continue
        # every decoding of the file in one buffer (a window across two of them is harmless)
        n = _hits(b"\0\0\0\0\0\0\0".join(_decodings(f.read_bytes())), windows)
        if n:
            found[str(f.relative_to(directory))] = n
    return found


def test_key_window_search_finds_what_it_must(tmp_path: Path) -> None:
    """The search itself: a key raw at an odd offset, base64 at any alignment and hex are found;
    a file without them is clean."""
    key = bytes(range(7, 39))
    (tmp_path / "raw").write_bytes(b"x" * 13 + key[5:14] + b"y" * 5)
    (tmp_path / "b64").write_bytes(b"v=" + base64.b64encode(b"zz" + key)[:-4] + b"\n")
    (tmp_path / "hex").write_bytes(b'{"k":"' + key[8:20].hex().encode() + b'"}')
    (tmp_path / "clean").write_bytes(bytes(range(200, 256)) * 4)
    shifted = (int.from_bytes(key, "big") << 3).to_bytes(len(key) + 1, "big")
    (tmp_path / "bits").write_bytes(b"\x00\x01" + shifted[10:20])
    assert set(key_hits(tmp_path, [key])) == {"raw", "b64", "hex", "bits"}


def _collect(net: RunningNetwork, src: str, dst: str, n: int) -> list[bytes]:
    """`n` keys of 256 bits relayed from `src` to `dst`, each collected by `dst`."""
    out: list[bytes] = []
    with net.sae(src) as m, net.sae(dst) as s:
        while len(out) < n:
            r = m.post(f"/api/v1/keys/{dst}/enc_keys", json={"number": 4, "size": 256})
            if r.status_code == 503:
                time.sleep(0.3)
                continue
            assert r.status_code == 200, r.text
            keys = r.json()["keys"]
            got = s.post(
                f"/api/v1/keys/{src}/dec_keys",
                json={"key_IDs": [{"key_ID": k["key_ID"]} for k in keys]},
            )
            assert got.status_code == 200 and got.json()["keys"] == keys
            out += [base64.b64decode(k["key"]) for k in keys]
    return out


def test_no_delivered_key_on_disk_after_sigkill_and_after_a_clean_stop(tmp_path: Path) -> None:
    directory = tmp_path / "net"
    with running_network(directory, topology(LINE), fidelity="emulated") as net:
        for c in net.launcher.children.values():  # no process of the network can dump core
            assert c.proc is not None
            limits = Path(f"/proc/{c.proc.pid}/limits").read_text()
            assert re.search(r"Max core file size\s+0\s+0\s", limits), limits
        first = _collect(net, "alice", "bob", 16) + _collect(net, "alice", "carol", 8)
        first += _collect(net, "bob", "alice", 8)
        for name in net.launcher.children:  # SIGKILL every process at once
            net.launcher.kill(name, signal.SIGKILL)
        assert key_hits(directory, first) == {}
        net.launcher.start_all()
        net.launcher.wait_ready(timeout=90, synced=False)  # _collect waits out a 503
        second = _collect(net, "alice", "bob", 12) + _collect(net, "carol", "alice", 8)
    # a clean stop (SIGTERM to every process) has happened here
    assert key_hits(directory, first + second) == {}
