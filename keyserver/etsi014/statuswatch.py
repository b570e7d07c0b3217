"""Get status, watched: a KME's status version, and a wait until it moves on.

ETSI GS QKD 014 has no notification, so a client that must notice what its KME reports (an
eavesdropper alarm, an abort, new key) asks Get status on a clock. A KMS node watching its
modules that way asked each of them every few seconds, for ever: on a network of 372 modules
that was a fixed load of some 75 HTTPS requests a second while nothing happened.

This is the module side of a *long poll*, an extension the node uses only with a KME that
advertises it: the status body carries ``status_extension.status_version``, and
``GET .../status?after=V&wait=S`` is answered as soon as the version is no longer ``V``, or
after ``S`` seconds (at most :data:`MAX_WAIT_S`) with the status unchanged. A KME without the
extension refuses the query (as the ETSI API refuses any), and the node goes on asking on its
clock. The version moves on with anything a node acts on that the node did not do itself: a
block recorded (its key, QBER, alarm, abort) and the module's state. Keys handed out do not
move it: the node that took them is the module's only caller and knows.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Mapping

MAX_WAIT_S = 60.0
MAX_VERSION = 2**62
_UINT = re.compile(r"[0-9]{1,19}")
_SECONDS = re.compile(r"[0-9]{1,3}(\.[0-9]{1,3})?")


class StatusWatch:
    """The status version of one KME and its waiters (one event loop)."""

    def __init__(self) -> None:
        self._version = 0
        self._moved = asyncio.Event()

    @property
    def version(self) -> int:
        return self._version

    def bump(self) -> None:
        """Something a status reader acts on changed: wake every waiter."""
        self._version = (self._version + 1) % MAX_VERSION
        self._moved.set()
        self._moved = asyncio.Event()

    async def wait_past(self, version: int, seconds: float) -> None:
        """Return once the version is not `version`, or after `seconds`."""
        if self._version != version:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._moved.wait()


class WatchQueryError(ValueError):
    pass


def parse_watch_query(query: Mapping[str, list[str]]) -> tuple[int, float]:
    """``after`` (a status version, 0..2^62) and ``wait`` (seconds, 0 < wait <= MAX_WAIT_S,
    at most 3 decimals), each exactly once and nothing else; else :class:`WatchQueryError`."""
    if set(query) != {"after", "wait"} or any(len(v) != 1 for v in query.values()):
        raise WatchQueryError("a watched Get status takes exactly ?after=VERSION&wait=SECONDS")
    after, wait = query["after"][0], query["wait"][0]
    if not _UINT.fullmatch(after) or int(after) >= MAX_VERSION:
        raise WatchQueryError("after must be a status version (an integer below 2^62)")
    if not _SECONDS.fullmatch(wait) or not 0 < float(wait) <= MAX_WAIT_S:
        raise WatchQueryError(f"wait must be seconds within (0, {MAX_WAIT_S:g}]")
    return int(after), float(wait)
