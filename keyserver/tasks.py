"""Stopping a process's background tasks: cancel, and cancel again until they end.

A long-running loop that waits with a timeout must let a cancellation through even when it
arrives in the same event-loop step as what it waited for. ``asyncio.wait_for`` does not on
Python 3.11 (it returns the awaited result and drops the cancellation, CPython issue
gh-86296, fixed in 3.12), so a node's stop could wait for such a loop for ever. keyserver
waits with ``asyncio.timeout`` instead (ruff's TID251 rule bans ``wait_for``), and
:func:`cancel_all` is the stop that does not hang even if some library code drops a
cancellation: it cancels what is still running again, a bounded number of times.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

ROUND_SECONDS = 1.0  # how long each round of cancellations is given to end the tasks
ROUNDS = 5


async def cancel_all(
    tasks: Iterable[asyncio.Task[None]],
    rounds: int = ROUNDS,
    round_seconds: float = ROUND_SECONDS,
) -> list[asyncio.Task[None]]:
    """Cancel `tasks` and wait for them; the ones still running after `rounds` rounds.

    Each round cancels every task not yet done and waits up to `round_seconds`. A task that
    ended with an exception is done (its exception retrieved: the caller logged it when it
    happened, see the ``add_done_callback`` of the task's owner)."""
    every = list(tasks)
    pending = {t for t in every if not t.done()}
    for _ in range(rounds):
        if not pending:
            break
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=round_seconds)
    for t in every:
        if t.done() and not t.cancelled():
            t.exception()
    return [t for t in every if t in pending]
