"""Stopping background tasks: a task that drops a cancellation is cancelled again; one that
never ends is reported, not waited for."""

from __future__ import annotations

import asyncio
import contextlib

from keyserver.tasks import cancel_all


async def test_a_plain_task_and_a_failed_one_are_stopped_at_once() -> None:
    async def failing() -> None:
        raise ValueError("boom")

    plain = asyncio.create_task(asyncio.sleep(3600))
    failed = asyncio.create_task(failing())
    await asyncio.sleep(0)
    assert await cancel_all([plain, failed]) == []
    assert plain.cancelled()
    assert isinstance(failed.exception(), ValueError)  # retrieved: no "never retrieved" warning


async def test_a_task_that_drops_one_cancellation_is_cancelled_again() -> None:
    dropped = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            dropped.set()  # as asyncio.wait_for does on Python 3.11 (CPython gh-86296)
        await asyncio.sleep(3600)

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    assert await cancel_all([task], round_seconds=0.1) == []
    assert dropped.is_set() and task.cancelled()


async def test_a_task_that_never_ends_is_returned_after_the_rounds() -> None:
    released = asyncio.Event()

    async def deaf() -> None:
        while not released.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(3600)

    task = asyncio.create_task(deaf())
    await asyncio.sleep(0)
    assert await cancel_all([task], rounds=3, round_seconds=0.05) == [task]
    assert not task.done()
    released.set()  # tidy: let it end
    task.cancel()
    await task
