"""Asyncio adapter between a call session's key events and the local KME (ETSI 014 client).

The initiator (master SAE) answers :class:`FetchQkdKeys` with ``enc_keys`` and hands the keys
to the session; the responder (slave SAE) answers :class:`ResolveQkdKeys` with ``dec_keys``,
strictly in announcement order. Requests run in one background worker per endpoint, ahead of
need (the session asks ``lookahead`` epochs or pad blocks early), so rotations never wait on the
network.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from qphone.core.session import CallSession, FetchQkdKeys, ResolveQkdKeys
from qphone.kmeclient import KmeClient, KmeError, KmeOutOfKeys

log = logging.getLogger(__name__)

KeyRequest = FetchQkdKeys | ResolveQkdKeys


@dataclass
class KeySupplyStats:
    requests: int = 0
    keys: int = 0
    bits: int = 0
    failures: int = 0
    last_error: str | None = None
    kme_seconds: float = 0.0


T = TypeVar("T")


async def retry_out_of_keys(
    request: Callable[[], Awaitable[T]],
    wait_s: float,
    on_wait: Callable[[], None] | None = None,
) -> T:
    """Run ``request``; while the KME says it is out of key, retry for up to ``wait_s`` seconds
    (a QKD link fills its pool at its own rate). Other errors are raised at once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    delay = 0.05
    told = False
    while True:
        try:
            return await request()
        except KmeOutOfKeys:
            if loop.time() + delay > deadline:
                raise
            if on_wait is not None and not told:
                on_wait()
                told = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


class KeySupply:
    def __init__(
        self,
        session: CallSession,
        kme: KmeClient,
        peer_sae_id: str,
        on_keys: Callable[[], None],
        on_failure: Callable[[KmeError], None],
    ) -> None:
        self._session = session
        self._kme = kme
        self._peer = peer_sae_id
        self._queue: asyncio.Queue[KeyRequest] = asyncio.Queue()
        self._on_keys = on_keys  # called after keys went into the session (flush its events)
        self._on_failure = on_failure
        self._task: asyncio.Task[None] | None = None
        self.stats = KeySupplyStats()
        self.wait_s = 5.0  # how long an empty KME pool is waited out before failing

    def submit(self, request: KeyRequest) -> None:
        self._queue.put_nowait(request)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="qphone-key-supply")

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            req = await self._queue.get()
            t0 = loop.time()
            try:
                if isinstance(req, FetchQkdKeys):
                    keys = await retry_out_of_keys(
                        functools.partial(self._kme.enc_keys, self._peer, req.count, req.bits),
                        self.wait_s,
                    )
                    if self._session.closed:
                        return
                    self._session.add_qkd_keys(req.purpose, keys)
                else:
                    keys = await self._kme.dec_keys(self._peer, list(req.key_ids))
                    if self._session.closed:
                        return
                    self._session.provide_qkd_keys(keys)
            except KmeError as exc:
                self.stats.failures += 1
                self.stats.last_error = str(exc)
                log.warning("QKD key request failed: %s", exc)
                self._on_failure(exc)
                return
            self.stats.kme_seconds += loop.time() - t0
            self.stats.requests += 1
            self.stats.keys += len(keys)
            self.stats.bits += sum(k.bits for k in keys)
            self._on_keys()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
