"""The key supply: QKD keys from the local KME (ETSI GS QKD 014) when the call needs them.

The caller is the ETSI 014 master SAE: it takes keys with ``enc_keys`` (for the handshake:
:meth:`KeySupply.handshake_keys`; during the call: :class:`~qphone.core.session.FetchQkdKeys`)
and announces their IDs.  The answerer is the slave SAE: it resolves announced IDs with
``dec_keys`` (:meth:`KeySupply.resolve_keys` in the handshake;
:class:`~qphone.core.session.ResolveQkdKeys` during the call), strictly in announcement order.
During the call, requests run in one background worker, ahead of need (the session asks
``lookahead`` epochs or pad blocks early), so a rotation never waits on the network.  A KME that
says it is out of key is retried for a while (a QKD link fills its pool at its own rate); any
other failure (a KME error, or keys the session refuses: wrong size, wrong IDs) is reported
once to ``on_failure`` and the worker stops: it never dies silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from qphone.core.qkd import QkdKey
from qphone.core.session import CallSession, FetchQkdKeys, ResolveQkdKeys
from qphone.kmeclient import KmeClient, KmeOutOfKeys

log = logging.getLogger(__name__)

KeyRequest = FetchQkdKeys | ResolveQkdKeys
MID_CALL_WAIT_S = 5.0  # how long an empty KME pool is waited out during a call before failing

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
    """QKD keys for one call, shared with ``peer_sae_id``, from this endpoint's KME."""

    def __init__(self, kme: KmeClient, peer_sae_id: str, wait_s: float = MID_CALL_WAIT_S) -> None:
        self._kme = kme
        self._peer = peer_sae_id
        self.wait_s = wait_s
        self._session: CallSession | None = None
        self._on_keys: Callable[[], None] = lambda: None
        self._on_failure: Callable[[Exception], None] = lambda exc: None
        self._queue: asyncio.Queue[KeyRequest] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------- handshake
    async def handshake_keys(
        self, bits: int, wait_s: float, on_wait: Callable[[], None] | None = None
    ) -> list[QkdKey]:
        """Caller: one key of ``bits`` for the handshake (waits out an empty pool)."""
        return await retry_out_of_keys(
            lambda: self._kme.enc_keys(self._peer, 1, bits), wait_s, on_wait
        )

    async def resolve_keys(self, key_ids: Sequence[uuid.UUID]) -> list[QkdKey]:
        """Answerer: the keys the caller announced in its ClientHello."""
        return await self._kme.dec_keys(self._peer, list(key_ids))

    # ----------------------------------------------------------------- during the call
    def attach(
        self,
        session: CallSession,
        on_keys: Callable[[], None],
        on_failure: Callable[[Exception], None],
    ) -> None:
        """Serve ``session``'s requests from now on; ``on_keys()`` runs after keys went into
        it (so the endpoint drains its new events), ``on_failure(exc)`` when the KME failed
        (a :class:`KmeError`) or its keys were refused (any other exception)."""
        self._session = session
        self._on_keys = on_keys
        self._on_failure = on_failure

    def submit(self, request: KeyRequest) -> None:
        self._queue.put_nowait(request)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="qphone-key-supply")

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    async def _run(self) -> None:
        session = self._session
        assert session is not None, "attach() first"
        while True:
            req = await self._queue.get()
            try:
                if isinstance(req, FetchQkdKeys):
                    keys = await retry_out_of_keys(
                        functools.partial(self._kme.enc_keys, self._peer, req.count, req.bits),
                        self.wait_s,
                    )
                    if session.closed:
                        return
                    session.add_qkd_keys(req.purpose, keys)
                else:
                    keys = await self._kme.dec_keys(self._peer, list(req.key_ids))
                    if session.closed:
                        return
                    session.provide_qkd_keys(keys)
            except Exception as exc:  # any failure ends the worker, never silently
                log.warning("QKD key request failed: %s", exc)
                self._on_failure(exc)
                return
            self._on_keys()

    async def aclose(self) -> None:
        """Stop the worker (requests not served yet are dropped)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
