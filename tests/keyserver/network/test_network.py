"""A whole QKD network in real processes (modules and nodes), on a 4-node diamond on loopback.

a --- b
|     |      alice at a, bob at d, carol at c, dave at b; two node-disjoint routes a-b-d
c --- d      and a-c-d
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.network_fixtures import RunningNetwork, running_network, stocked
from tests.support.node_fixtures import topology

pytestmark = pytest.mark.timeout(240)

DIAMOND = """
[[nodes]]
id = "a"
[[nodes]]
id = "b"
[[nodes]]
id = "c"
[[nodes]]
id = "d"
[[links]]
a = "a"
b = "b"
distance_km = 20
[[links]]
a = "b"
b = "d"
distance_km = 20
[[links]]
a = "a"
b = "c"
distance_km = 25
[[links]]
a = "c"
b = "d"
distance_km = 25
[[saes]]
id = "alice"
node = "a"
[[saes]]
id = "bob"
node = "d"
[[saes]]
id = "carol"
node = "c"
[[saes]]
id = "dave"
node = "b"
"""


def link_between(u: str, v: str) -> str:
    return f"{u}-{v}" if (u, v) in {("a", "b"), ("b", "d"), ("a", "c"), ("c", "d")} else f"{v}-{u}"


def relay(
    net: RunningNetwork,
    n: int,
    number: int = 2,
    size: int = 512,
    src: str = "alice",
    dst: str = "bob",
) -> list[dict[str, str]]:
    out = []
    with net.sae(src) as m, net.sae(dst) as s:
        for _ in range(n):
            for _attempt in range(60):  # a link may be refilling, or the first node's view of
                # a far link's stock may lag its announcements: 503 is "retry later", as a call
                # would (wait for key)
                r = m.post(f"/api/v1/keys/{dst}/enc_keys", json={"number": number, "size": size})
                if r.status_code != 503:
                    break
                time.sleep(0.5)
            assert r.status_code == 200, r.text
            keys = r.json()["keys"]
            got = s.post(
                f"/api/v1/keys/{src}/dec_keys",
                json={"key_IDs": [{"key_ID": k["key_ID"]} for k in keys]},
            )
            assert got.status_code == 200 and got.json()["keys"] == keys
            out += keys
    return out


class DemandLoop(threading.Thread):
    """A call's key demand: `src` (alice) asks for a key every `period` s for bob; with
    `collect`, bob takes each key from his node as it comes, as a call's answerer does (a pair
    may not leave more than its share of uncollected key at the far node)."""

    def __init__(
        self,
        net: RunningNetwork,
        period: float = 0.1,
        size: int = 256,
        src: str = "alice",
        collect: bool = False,
    ) -> None:
        super().__init__(daemon=True)
        self.net, self.period, self.size, self.src = net, period, size, src
        self.collect = collect
        self.got: list[dict[str, str]] = []
        self.times: list[float] = []  # when each key arrived
        self.failures: list[tuple[float, int, str]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with self.net.sae(self.src) as alice, self.net.sae("bob") as bob:
            while not self.stop.wait(self.period):
                try:
                    r = alice.post(
                        "/api/v1/keys/bob/enc_keys", json={"number": 1, "size": self.size}
                    )
                except httpx.HTTPError as e:
                    self.failures.append((time.monotonic(), 0, repr(e)))
                    continue
                if r.status_code == 200:
                    self.got += r.json()["keys"]
                    self.times.append(time.monotonic())
                    if self.collect:
                        ids = [{"key_ID": k["key_ID"]} for k in r.json()["keys"]]
                        taken = bob.post(f"/api/v1/keys/{self.src}/dec_keys", json={"key_IDs": ids})
                        assert taken.status_code == 200, taken.text
                else:
                    self.failures.append((time.monotonic(), r.status_code, r.text))


# -- key material never crosses a classical channel in the clear ---------------------------------
def _blobs(obj: Any) -> list[bytes]:
    """Every byte string a JSON message carries (base64 and hex fields decoded), and its text."""
    out: list[bytes] = []
    if isinstance(obj, dict):
        for v in obj.values():
            out += _blobs(v)
    elif isinstance(obj, list):
        for v in obj:
            out += _blobs(v)
    elif isinstance(obj, str):
        out.append(obj.encode())
        with contextlib.suppress(binascii.Error, ValueError):
            out.append(base64.b64decode(obj, validate=True))
        with contextlib.suppress(ValueError):
            out.append(bytes.fromhex(obj))
    return out


def _bit_windows(key: bytes, bits: int) -> set[int]:
    n = int.from_bytes(key, "big")
    total = 8 * len(key)
    mask = (1 << bits) - 1
    return {(n >> (total - bits - i)) & mask for i in range(total - bits + 1)}


def assert_no_key_window(corpus: list[bytes], keys: list[bytes]) -> None:
    """No 64-bit window of any key, at any bit offset, in any message: every 64-bit match would
    contain a byte-aligned 56-bit window of the message equal to a 56-bit window of the key."""
    windows: set[int] = set()
    for k in keys:
        windows |= _bit_windows(k, 56)
    for blob in corpus:
        for i in range(len(blob) - 6):
            assert int.from_bytes(blob[i : i + 7], "big") not in windows, "key bits in a message"


def test_relay_in_processes_no_key_in_the_clear_and_sigkill_mid_relay(tmp_path: Path) -> None:
    with running_network(tmp_path / "net", topology(DIAMOND), record=True) as net:
        net.wait(lambda: stocked(net), what="link keys on every link")
        keys = relay(net, 10) + relay(net, 3, src="bob", dst="alice")
        st = net.state("a")["pairs"]["alice->bob"]
        assert st["relays"] == 10 and len(st["routes"][0]) == 3
        # -- every node-to-node message of the run: sync, announcements, LSAs, relay, ack, void
        recs = [r for r in net.records() if "body" in r]
        paths = {r["path"] for r in recs}
        assert {
            "/kms/v1/link/announce",
            "/kms/v1/link/sync",
            "/kms/v1/lsa",
            "/kmapi/v1/ext_keys",
            "/kmapi/v1/ext_keys/ack",
        } <= paths
        corpus = [b for r in recs for b in _blobs(r["body"])]
        corpus.append("\n".join(json.dumps(r["body"]) for r in recs).encode())
        material = [base64.b64decode(k["key"]) for k in keys]
        assert_no_key_window(corpus, material)
        # relay payloads are one-time-pad ciphertexts: value XOR key = fresh, balanced pad
        by_id = {k["key_ID"]: base64.b64decode(k["key"]) for k in keys}
        pads: list[bytes] = []
        for r in recs:
            if r["path"] != "/kmapi/v1/ext_keys" or r["dir"] != "out":
                continue
            for entry in r["body"]["keys"]:
                if entry["value"] is not None and entry["key_id"] in by_id:
                    c = base64.b64decode(entry["value"])
                    k = by_id[entry["key_id"]]
                    pads.append(bytes(x ^ y for x, y in zip(c, k, strict=True)))
        assert len(pads) >= 20 and len(set(pads)) == len(pads)
        ones = sum(bin(b).count("1") for p in pads for b in p) / (8 * sum(map(len, pads)))
        assert 0.45 < ones < 0.55
        # -- SIGKILL the middle node of the route while a call's key demand runs, restart it
        loop = DemandLoop(net, period=0.05)
        loop.start()
        net.wait(lambda: len(loop.got) >= 5, what="keys flowing")
        middle = net.route("alice", "bob")[1]
        net.launcher.kill(middle)
        time.sleep(2.0)
        net.launcher.start(middle)
        net.wait(lambda: net.try_state(middle) is not None, what="restarted node")
        count = len(loop.got)
        net.wait(lambda: len(loop.got) >= count + 10, what="keys after the restart")
        loop.stop.set()
        loop.join()
        ids = [k["key_ID"] for k in loop.got]
        assert len(ids) == len(set(ids))
        with net.sae("bob") as bob:  # every key alice got is at bob's node, once
            for k in loop.got:
                r = bob.get("/api/v1/keys/alice/dec_keys", params={"key_ID": k["key_ID"]})
                assert r.status_code == 200 and r.json()["keys"] == [k]
                again = bob.get("/api/v1/keys/alice/dec_keys", params={"key_ID": k["key_ID"]})
                assert again.status_code == 400
        # and nothing is left at d that alice never got: failed relays were voided
        net.wait(
            lambda: net.state("d")["held_keys"] == 0 and net.state("a")["pending_relays"] == 0,
            what="voids delivered",
        )


def test_eve_and_fibre_cut_are_routed_around_while_a_call_goes_on(tmp_path: Path) -> None:
    with running_network(tmp_path / "net", topology(DIAMOND)) as net:
        net.wait(lambda: stocked(net), what="link keys on every link")
        # the call's demand keeps the links producing (an idle, full link runs no QKD blocks,
        # so an eavesdropper there is noticed only when it runs again)
        loop = DemandLoop(net, period=0.05, size=2048, collect=True)
        loop.start()
        net.wait(lambda: len(loop.got) >= 5, what="keys flowing")
        route = net.route("alice", "bob")
        assert route is not None
        eve_link = link_between(route[1], route[2])
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "keyserver.cli",
                "network",
                "eve",
                "--dir",
                str(net.directory),
                "--link",
                eve_link,
                "--fraction",
                "1.0",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        assert json.loads(out.stdout)["eve_fraction"] == 1.0
        # the nodes may route alice's demand over the other route while it holds more key; the
        # SAE at the far end of Eve's link (carol at c, dave at b) draws on that link alone, so
        # it keeps running blocks and Eve is seen
        near = {"b": "dave", "c": "carol"}[route[1]]
        local = DemandLoop(net, period=0.05, size=2048, src=near, collect=True)
        local.start()

        def alarmed() -> bool:
            with net.sae("alice") as c:
                ext = c.get("/api/v1/keys/bob/status").json()["status_extension"]
            down = {d["link"]: d for d in ext["network"]["down_links"]}
            return (
                eve_link in down
                and down[eve_link]["alarm"]
                and (ext["route"] is not None and eve_link not in ext["route"]["links"])
            )

        net.wait(alarmed, timeout=120, what="the eavesdropped link to abort and be avoided")
        local.stop.set()
        local.join()
        status = json.loads(
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "keyserver.cli",
                    "network",
                    "status",
                    "--dir",
                    str(net.directory),
                    "--json",
                ],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout
        )
        assert status["links"][eve_link]["alarm"] is True and not status["links"][eve_link]["up"]
        count = len(loop.got)
        net.wait(lambda: len(loop.got) >= count + 10, what="the call's keys on the other route")
        # the call went on: keys kept coming on the other route, and every request refused on
        # the way was a shortage a call's key supply retries (503 with a reason), never a
        # broken connection or an error that would end the call
        for _, code, text in loop.failures:
            assert code == 503 and json.loads(text)["details"][0]["reason"] in (
                "out_of_keys",
                "no_route",
                "relay_failed",
            ), text
        # fibre cut on the other route: no route at all, a 503 naming both broken links
        other = net.route("alice", "bob")
        assert other is not None and other != route
        cut = link_between(other[0], other[1])
        cut_module = net.info["links"][cut]["modules"][0]
        net.launcher.kill(cut_module)
        loop.stop.set()
        loop.join()

        def refused() -> str | None:
            with net.sae("alice") as c:
                r = c.post("/api/v1/keys/bob/enc_keys", json={"number": 1})
            return r.json()["message"] if r.status_code == 503 else None

        net.wait(lambda: refused() is not None and "no route" in (refused() or ""), what="no route")
        msg = refused() or ""
        assert eve_link in msg and cut in msg and "eavesdropper" in msg, msg
        # the module comes back: the link recovers and carries keys again
        net.launcher.start(cut_module)
        net.wait(lambda: net.route("alice", "bob") is not None, timeout=90, what="recovery")
        assert len(relay(net, 3)) == 6


def test_multipath_one_compromised_node_learns_nothing(tmp_path: Path) -> None:
    with running_network(
        tmp_path / "net", topology(DIAMOND), multipath=2, record=True, record_view=True
    ) as net:
        net.wait(lambda: stocked(net), what="link keys on every link")
        # a's link-state view of the far links' stock comes with b's and d's next announcements
        # (batched, up to 5 s after the stock moved): until then a finds no two paths with key
        net.wait(lambda: net.route("alice", "bob") is not None, what="two node-disjoint routes")
        keys = relay(net, 25, number=4, size=256)
        with net.sae("alice") as c:
            ext = c.get("/api/v1/keys/bob/status").json()["status_extension"]
        assert ext["route"]["legs"] == 2
        # b is compromised: everything it saw (messages, and every share it handled in clear)
        view = [
            json.loads(line)
            for line in (net.directory / "records" / "b.jsonl").read_text().splitlines()
        ]
        shares = {}
        for v in view:
            if "view" in v:
                for kid, share in zip(v["view"]["key_ids"], v["view"]["keys"], strict=True):
                    shares[kid] = bytes.fromhex(share)
        by_id = {k["key_ID"]: base64.b64decode(k["key"]) for k in keys}
        assert set(by_id) <= set(shares)  # b relayed one leg of every key
        corpus = [b for v in view for b in _blobs(v)]
        assert_no_key_window(corpus, list(by_id.values()))
        agree = sum(
            8 - bin(x ^ y).count("1")
            for kid, k in by_id.items()
            for x, y in zip(k, shares[kid], strict=True)
        )
        total = 8 * sum(len(k) for k in by_id.values())
        assert abs(agree / total - 0.5) < 0.03  # 25600 bits: 6 sigma is 0.019


def test_desync_from_a_restored_store_is_repaired(tmp_path: Path) -> None:
    with running_network(tmp_path / "net", topology(DIAMOND)) as net:
        net.wait(lambda: stocked(net), what="link keys on every link")
        c_dir = Path(net.info["nodes"]["c"]["config"]).parent / "c"
        net.launcher.kill("c", 15)
        backup = tmp_path / "c-backup"
        shutil.copytree(c_dir, backup)
        net.launcher.start("c")
        net.wait(lambda: all(x["synced"] for x in net.state("c")["links"].values()), what="c back")
        net.wait(lambda: net.route("alice", "carol") is not None, what="a route to carol again")
        # spends link a-c below three quarters of its stock cap, so the nodes draw and announce
        # more key: the copy of c's store taken above is now behind its neighbours
        before = relay(net, 24, dst="carol")
        net.wait(
            lambda: (
                net.state("c")["counters"]["announcements"] > 0
                or net.state("a")["counters"]["announcements"] > 0
            ),
            what="an announcement after the spend",
        )
        time.sleep(2)
        net.launcher.kill("c")
        shutil.rmtree(c_dir)
        shutil.copytree(backup, c_dir)  # c restored from the older copy
        net.launcher.start("c")

        def repaired() -> bool:
            total = sum(net.state(n)["counters"]["desyncs_repaired"] for n in ("a", "c", "d"))
            return total > 0 and all(x["synced"] for x in net.state("c")["links"].values())

        net.wait(repaired, what="desync detected and repaired")
        net.wait(lambda: net.route("alice", "carol") is not None, what="link a-c usable")
        after = relay(net, 10, dst="carol")  # works again; no key or pad is used twice
        ids = [k["key_ID"] for k in before + after]
        assert len(ids) == len(set(ids))
        assert len({k["key"] for k in before + after}) == len(ids)
