"""[timers] dead_misses (keyserver/kms/linkmanager.py): a link goes down only after that many
failed module status requests in a row (one slow answer on a loaded machine is not a link
going down and up), while an alarm the module reports takes it down at the next status."""

from __future__ import annotations

import asyncio
from pathlib import Path

from keyserver.kms.nodeconfig import Timers
from keyserver.kms.routing import DownReason
from tests.support.node_fixtures import DIAMOND, running_network, topology, wait_for


async def test_a_link_goes_down_after_dead_misses_failed_polls_and_an_alarm_at_once(
    tmp_path: Path,
) -> None:
    timers = Timers(module_poll=0.3, hungry_poll=0.3, dead_misses=3)
    async with running_network(tmp_path, topology(DIAMOND), timers=timers) as net:
        lid = "a-b"
        spec = net.plan.topology.link(lid)
        link = net.nodes[spec.a].links[lid]  # the transmitter side polls its module
        assert link.transmitter and link.report(0).up
        net.links[lid].down = True
        seen: set[int] = set()
        while link.misses < timers.dead_misses:
            seen.add(link.misses)
            if link.misses < timers.dead_misses:  # fewer misses: still its last status
                assert link.status is not None and link.report(0).up
            await asyncio.sleep(0.02)
        assert {1, 2} <= seen  # it was seen up after one and after two failed polls
        assert link.report(0).reason is DownReason.MODULE_UNREACHABLE
        net.links[lid].down = False
        await wait_for(lambda: link.report(0).up, timeout=10, what="the module back")
        net.links[lid].alarm = True  # reported by the module: no misses to wait for
        await wait_for(
            lambda: link.report(0).reason is DownReason.EAVESDROPPER, timeout=5, what="alarm"
        )
        assert link.misses == 0
