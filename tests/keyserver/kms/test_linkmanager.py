"""The link manager's draws under a steady spend (in-process nodes, real HTTPS, in-memory links):
the stock is refilled in batches once it is a quarter below the cap, not by a module round trip
and an announcement for every few keys spent."""

from __future__ import annotations

import asyncio
from pathlib import Path

from keyserver.kms.linkmanager import MAX_DRAW_KEYS
from tests.support.node_fixtures import running_network, topology, wait_for

PAIR = """
[[nodes]]
id = "a"
[[nodes]]
id = "b"
[[links]]
a = "a"
b = "b"
distance_km = 5
[[saes]]
id = "alice"
node = "a"
[[saes]]
id = "bob"
node = "b"
"""


async def test_a_steady_spend_is_refilled_in_batches(tmp_path: Path) -> None:
    """Four SAE clients at once, 60 one-key requests each (48 bytes of a's stream a key, 11 KiB
    in all: two thirds of the 16 KiB cap): a's link loop draws a few batches, each once the
    stock is a quarter below the cap, not a module round trip and an announcement for every few
    keys spent while a draw is under way."""
    async with running_network(tmp_path, topology(PAIR)) as net:
        a = net.nodes["a"]
        [link] = a.links.values()
        assert link.transmitter
        cap = a.linkmanager.cap_bytes()

        def stock() -> int:
            return min(a.store.link_keys.stock_bytes(link.spec.id, o) for o in ("a", "b"))

        await wait_for(lambda: stock() > cap - cap // 4, what="the stock above the wake mark")
        before = a.counters["announcements"]

        async def client() -> None:
            async with net.sae("alice") as alice:
                for _ in range(60):
                    r = await alice.get("/api/v1/keys/bob/enc_keys")
                    assert r.status_code == 200, r.text

        await asyncio.gather(*(client() for _ in range(4)))
        draws = a.counters["announcements"] - before
        assert a.counters["direct_keys_issued"] >= 240
        # 11 KiB spent: about three refills at the quarter mark (a batch each, and what the
        # module lacked then); a loop that drew whenever the stock was below the cap drew
        # again after nearly every request that came in while it drew
        assert 1 <= draws <= 10, draws
        assert cap // 4 <= MAX_DRAW_KEYS * 128  # one batch of 1024-bit module keys refills it
