"""The link-state agent: a node that comes back learns the network at once, not at the next
refresh; a key rate that moved is flooded, not left to the refresh."""

from __future__ import annotations

import time
from pathlib import Path

from keyserver.kms.nodeconfig import Timers
from tests.support.node_fixtures import DIAMOND, running_network, topology, wait_for

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


async def test_a_key_rate_that_fell_reaches_every_node_without_a_refresh(tmp_path: Path) -> None:
    """a-b's module reports a quarter of its rate. A caller's OTP capacity check reads the
    route's slowest rate from its node's link-state database, so the change is flooded (in a
    batch), not left to a refresh that a big network sends every few minutes."""
    async with running_network(tmp_path, topology(DIAMOND), timers=NO_REFRESH) as net:
        net.links["a-b"].rate_bps = 2.5e4
        d = net.nodes["d"]
        await wait_for(
            lambda: d.lsdb.view("a-b", time.monotonic()).rate_bps <= 2.5e4,
            timeout=30,
            what="d to see a-b's new rate",
        )
