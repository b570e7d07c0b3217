"""A node's shared plumbing: its timed waits let a stop's cancellation through."""

from __future__ import annotations

import asyncio
from pathlib import Path

from keyserver.kms.nodeconfig import load_node_config
from keyserver.kms.nodecontext import NodeContext
from keyserver.network.plan import Options, make_plan, write_configs
from tests.support.node_fixtures import DIAMOND, topology


def context(tmp_path: Path) -> NodeContext:
    plan = make_plan(tmp_path, topology(DIAMOND), Options(testing=True))
    write_configs(plan)
    return NodeContext(load_node_config(plan.nodes["a"].config))


async def test_a_cancel_that_arrives_with_the_wake_ends_the_loop(tmp_path: Path) -> None:
    """The event is set and the task cancelled in the same event-loop step (a node stops
    while a module status wakes its link-state agent): the loop ends. With asyncio.wait_for
    on Python 3.11 the cancellation was dropped and the loop ran on, so the node's stop
    waited for ever (CPython gh-86296)."""
    ctx = context(tmp_path)
    wake = asyncio.Event()
    rounds = 0

    async def agent() -> None:
        nonlocal rounds
        while True:
            await ctx.sleep_or(wake, 3600.0)
            rounds += 1

    task = asyncio.create_task(agent())
    await asyncio.sleep(0)
    wake.set()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5.0)
    assert task in done and task.cancelled()
    assert rounds == 0
