"""Each SAE keeps its share of a link, in real processes: one SAE draining a link as fast as it can
(and leaving its keys uncollected) neither stops another SAE's 1-key requests nor an OTP call's
key demand at 12 kbit/s on the same link; its refusals name the quota and the share, and what it
parks at the far node stays within its pair's quota there.

    a --- b      alice and dave at a, bob at b
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.network_fixtures import RunningNetwork, running_network, stocked
from tests.support.node_fixtures import topology

pytestmark = pytest.mark.timeout(240)

PAIR = """
[[nodes]]
id = "a"
[[nodes]]
id = "b"
[[links]]
a = "a"
b = "b"
distance_km = 10
[[saes]]
id = "alice"
node = "a"
[[saes]]
id = "dave"
node = "a"
[[saes]]
id = "bob"
node = "b"
"""


class Drain(threading.Thread):
    """dave asks for 8 keys of 256 bits for bob, back to back, and never collects them."""

    def __init__(self, net: RunningNetwork) -> None:
        super().__init__(daemon=True)
        self.net = net
        self.stop = threading.Event()
        self.got = 0
        self.refusals: list[dict[str, Any]] = []

    def run(self) -> None:
        with self.net.sae("dave") as dave:
            while not self.stop.is_set():
                try:
                    r = dave.post("/api/v1/keys/bob/enc_keys", json={"number": 8, "size": 256})
                except httpx.HTTPError:
                    continue
                if r.status_code == 200:
                    self.got += 8
                else:
                    self.refusals.append(r.json())


def test_a_draining_sae_does_not_starve_another_nor_a_12_kbit_s_call(tmp_path: Path) -> None:
    with running_network(tmp_path / "net", topology(PAIR)) as net:
        net.wait(lambda: stocked(net, 60_000), what="link key")  # nearly full: 64 kbit
        drain = Drain(net)
        drain.start()
        net.wait(lambda: len(drain.refusals) >= 3, timeout=60, what="dave's share used up")
        # an OTP call at 12 kbit/s: one key of 2048 bits every 1/6 s, and once a second a
        # 1-key request of 256 bits; bob collects them all
        refused: list[str] = []
        served = 0
        with net.sae("alice") as alice, net.sae("bob") as bob:
            start = time.monotonic()
            for i in range(36):  # 6 s of call (or more, on a busy machine)
                time.sleep(max(0.0, start + i / 6 - time.monotonic()))
                for size in (2048, 256) if i % 6 == 0 else (2048,):
                    # a link that is momentarily down (its module between two QKD sessions)
                    # is no_route, which a call's key supply retries; a share refusal is not
                    for _ in range(30):
                        r = alice.post(
                            "/api/v1/keys/bob/enc_keys", json={"number": 1, "size": size}
                        )
                        if r.status_code != 503 or r.json()["details"][0]["reason"] != "no_route":
                            break
                        time.sleep(0.1)
                    if r.status_code != 200:
                        refused.append(r.text)
                        continue
                    key = r.json()["keys"][0]
                    got = bob.get("/api/v1/keys/alice/dec_keys", params={"key_ID": key["key_ID"]})
                    assert got.status_code == 200 and got.json()["keys"] == [key]
                    served += 1
        drain.stop.set()
        drain.join()
        assert refused == [] and served == 42, refused[:2]
        # dave was refused, each time by one of his quotas: his share of the stock at a (named,
        # with the share) or his pair's quota of uncollected key at b (the relay is voided)
        assert drain.refusals
        for r in drain.refusals:
            d = r["details"][0]
            if d["reason"] == "out_of_keys":
                assert d["quota"] == "sae_stock_share" and d["sae"] == "dave" and d["saes"] == 2
                assert d["share_bits"] == 256 * 256 // 2  # 256 keys of 256 bits, halved
            else:
                assert d["reason"] == "relay_failed" and "not yet collected" in r["message"], r
        # what dave parked at b (uncollected) is within the pair's quota there
        assert 8 * 32 * net.state("b")["held_keys"] <= 256 * 256
