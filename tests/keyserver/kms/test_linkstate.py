"""The link-state agent: a node that comes back learns the network at once, not at the next
refresh; a key rate that moved is flooded, not left to the refresh."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from keyserver.kms.nodeconfig import Timers
from tests.support.node_fixtures import DIAMOND, Net, running_network, topology, wait_for

# no LSA is refreshed within the test: what a node knows came from changes and resyncs
NO_REFRESH = Timers(lsa_refresh=3600.0)


async def test_a_restarted_node_gets_the_database_from_its_neighbours(tmp_path: Path) -> None:
    """d restarts with an empty link-state database. a's links did not change, so a floods
    nothing; d still sees a's LSA (and so every link up) because d's neighbours send their
    whole database when the link comes into sync, as OSPF's database exchange does."""
    async with running_network(tmp_path, topology(DIAMOND), timers=NO_REFRESH) as net:
        floods_at_a = net.nodes["a"].counters["lsa_floods"]
        await net.restart("d")
        d = net.nodes["d"]

        def d_sees_everything() -> bool:
            now = time.monotonic()
            return d.lsdb.fresh("a", now) is not None and all(v.up for v in d.lsdb.views(now))

        await wait_for(d_sees_everything, timeout=30, what="d to learn every link from b and c")
        assert net.nodes["a"].counters["lsa_floods"] == floods_at_a  # not by a flood from a


async def a_b_rate_falls_and_d_sees_it(net: Net) -> None:
    """a-b's module reports a quarter of its rate; d's link-state view follows."""
    net.links["a-b"].rate_bps = 2.5e4
    d = net.nodes["d"]
    await wait_for(
        lambda: d.lsdb.view("a-b", time.monotonic()).rate_bps <= 2.5e4,
        timeout=30,
        what="d to see a-b's new rate",
    )


async def test_a_key_rate_that_fell_reaches_every_node_without_a_refresh(tmp_path: Path) -> None:
    """a-b's module reports a quarter of its rate. A caller's OTP capacity check reads the
    route's slowest rate from its node's link-state database, so the change is flooded (in a
    batch), not left to a refresh that a big network sends every few minutes."""
    async with running_network(tmp_path, topology(DIAMOND), timers=NO_REFRESH) as net:
        await a_b_rate_falls_and_d_sees_it(net)


async def test_a_key_rate_that_wobbles_is_not_flooded_and_one_that_fell_is(tmp_path: Path) -> None:
    """A module's rate over its last blocks wobbles by a few percent. Around the edge of a
    fixed bucket that would flood an LSA at every status; against the rate flooded last it
    floods nothing until the rate moved by a factor of 1.4."""
    fast = Timers(lsa_refresh=3600.0, module_poll=0.2, hungry_poll=0.2, lsa_batch=0.2)
    async with running_network(tmp_path, topology(DIAMOND), timers=fast) as net:
        a, b = net.nodes["a"], net.nodes["b"]

        def full() -> bool:  # no stock moves any more: a flood now could only be the rate
            return all(
                node.store.link_keys.stock_bytes(lid, owner) >= node.linkmanager.cap_bytes() - 128
                for node in net.nodes.values()
                for lid, link in node.links.items()
                for owner in (link.spec.a, link.spec.b)
            )

        await wait_for(full, timeout=30, what="every stock to fill")
        await asyncio.sleep(1.0)  # the last batch out
        floods = (a.counters["lsa_floods"], b.counters["lsa_floods"])
        polls = a.counters["module_polls"]
        for rate in (9.5e4, 9.0e4) * 4:  # across 2^16.5 = 92,682: a fixed bucket's edge
            net.links["a-b"].rate_bps = rate
            await asyncio.sleep(0.5)
        assert a.counters["module_polls"] >= polls + 8  # a looked at its modules all along
        assert (a.counters["lsa_floods"], b.counters["lsa_floods"]) == floods
        await a_b_rate_falls_and_d_sees_it(net)
        assert a.counters["lsa_floods"] > floods[0]
