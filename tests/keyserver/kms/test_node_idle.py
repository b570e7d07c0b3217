"""An idle KMS node is event-driven: what it does on its own grows with change, not with time.

Nodes in one process (real HTTPS on loopback, in-memory links), with every idle timer set far
beyond the test's length: a node that polls on a clock would still ask its modules and
neighbours while the network is quiet; an event-driven one asks nothing until something
changes, and then a bounded number of times per change.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from keyserver.kms.node import KmsNode
from keyserver.kms.nodeconfig import load_node_config
from keyserver.network.plan import Options, make_plan, write_configs
from keyserver.pki.tls import client_context
from tests.support.node_fixtures import DIAMOND, MemoryLink, topology, wait_for

# every idle timer an hour or more: only events can make a node act within this test
LONG_TIMERS = """
[timers]
module_poll_seconds = 3600
sync_heartbeat_seconds = 3600
neighbour_timeout_seconds = 9000
"""
ACTIONS = ("module_polls", "syncs_sent", "lsa_posts", "lsa_floods", "wakeups")


def _actions(nodes: dict[str, KmsNode]) -> dict[str, int]:
    return {k: sum(n.counters[k] for n in nodes.values()) for k in ACTIONS}


async def test_a_quiet_network_makes_no_requests_and_a_relay_a_bounded_few(
    tmp_path: Path,
) -> None:
    topo = topology(DIAMOND)
    plan = make_plan(tmp_path, topo, Options(testing=True, max_key_count=512))
    pki = write_configs(plan)
    for n in plan.nodes.values():
        text = n.config.read_text().replace(
            "lsa_interval_seconds = 1.0",
            "lsa_interval_seconds = 0.2\nlsa_batch_seconds = 0.2\nlsa_refresh_seconds = 3600\n"
            "lsa_max_age_seconds = 9000",
        )
        n.config.write_text(text + LONG_TIMERS)
    links = {link.id: MemoryLink(seed=i + 1) for i, link in enumerate(topo.links)}
    nodes = {
        n: KmsNode(
            load_node_config(plan.nodes[n].config),
            {x.id: links[x.id].end(x.a == n) for x in topo.links_of(n)},
        )
        for n in topo.node_ids()
    }
    await asyncio.gather(*(node.start() for node in nodes.values()))
    try:

        def settled() -> bool:
            now = time.monotonic()
            return all(
                link.synced
                and link.neighbour_ok
                and min(
                    node.store.link_keys.stock_bytes(lid, o) for o in (link.spec.a, link.spec.b)
                )
                >= node.config.max_key_count * node.config.limits.key_size // 8
                for node in nodes.values()
                for lid, link in node.links.items()
            ) and all(v.up for node in nodes.values() for v in node.lsdb.views(now))

        await wait_for(settled, timeout=60, what="links full and every link up everywhere")
        await asyncio.sleep(1.0)  # the last floods of the start go out
        # quiet: nothing changes, so nothing is asked, however long we wait
        before = _actions(nodes)
        await asyncio.sleep(3.0)
        quiet = {k: v - before[k] for k, v in _actions(nodes).items()}
        assert quiet == dict.fromkeys(ACTIONS, 0), quiet
        # one change: a relay over two hops; each node it touches acts a bounded few times
        # (a spend may wake a transmitter side, which tops its stock up and announces; a
        # stock that moved by a factor of two is flooded)
        before = _actions(nodes)
        drawn = sum(n.counters["announcements"] for n in nodes.values())
        alice = plan.topology.sae_node("alice")
        assert alice is not None
        certs = pki.sae("alice")
        ctx = client_context(pki.ca_cert("sae"), certs.cert, certs.key)
        async with httpx.AsyncClient(base_url=nodes[alice].sae_url, verify=ctx) as c:
            r = await c.post("/api/v1/keys/bob/enc_keys", json={"number": 1, "size": 256})
            assert r.status_code == 200, r.text
        await asyncio.sleep(2.0)
        after = _actions(nodes)
        changed = {k: after[k] - before[k] for k in ACTIONS}
        announced = sum(n.counters["announcements"] for n in nodes.values()) - drawn
        hops = 2
        assert changed["module_polls"] <= 2 * hops + announced, changed
        assert changed["syncs_sent"] == 0, changed
        # each end of a link the relay used floods at most once (a stock that moved by a
        # factor of two); a flood crosses every link at most twice (once each way)
        assert changed["lsa_floods"] <= 2 * hops, changed
        assert changed["lsa_posts"] <= max(1, changed["lsa_floods"]) * 2 * len(topo.links), changed
    finally:
        await asyncio.gather(*(node.stop() for node in nodes.values()))
