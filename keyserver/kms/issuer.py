"""Issuing keys to master SAEs: batched transactions; the peer KME is told before the SAE gets keys.

Concurrent enc_keys requests are coalesced: one SQLite transaction carves the keys of every queued
request and appends their issue notices to the outbox; one link message delivers the outbox to the
peer KME; only after the peer's acknowledgement are the keys handed to the master SAEs. So a master
SAE never holds a key its slave SAE cannot fetch. If the peer is unreachable the keys are voided
(the void notices follow once the link is back) and the callers get 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from keyserver.jsonlog import log
from keyserver.kms.peer import PeerClient, PeerUnavailable, decode_notices, encode_notices
from keyserver.kms.store import IssuedKey, IssueRequest, KeyStore, LinkDesync

_LOG = logging.getLogger("keyserver.kms.issuer")
_OUTBOX_BATCH = 2000


class OutOfKeys(Exception):
    """Not enough key material for the request (nothing was consumed)."""


@dataclass
class _Pending:
    request: IssueRequest
    future: asyncio.Future[list[IssuedKey]]


class Issuer:
    def __init__(self, store: KeyStore, peer: PeerClient) -> None:
        self._store = store
        self._peer = peer
        self._queue: list[_Pending] = []
        self._wake = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self.batches = 0
        self.keys_issued = 0

    async def issue(self, request: IssueRequest) -> list[IssuedKey]:
        fut: asyncio.Future[list[IssuedKey]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(request, fut))
        self._wake.set()
        return await fut

    async def run(self) -> None:
        """Batch loop: runs until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._queue = self._queue, []
            if not batch:
                continue
            try:
                await self._process(batch)
            except Exception as e:  # never leave callers waiting; keep serving later batches
                log(_LOG, logging.ERROR, "issue_batch_failed", error=repr(e))
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(e)

    async def _process(self, batch: list[_Pending]) -> None:
        live = [p for p in batch if not p.future.done()]
        try:
            results = self._store.issue([p.request for p in live])
        except Exception as e:  # store failure: answer 503 to everyone in the batch
            log(_LOG, logging.ERROR, "issue_failed", error=repr(e))
            for p in live:
                if not p.future.done():
                    p.future.set_exception(e)
            return
        issued = [k.key_id for r in results if r for k in r]
        try:
            if issued:
                await self.flush_outbox()
        except (PeerUnavailable, LinkDesync) as e:
            self._store.void(issued)
            log(_LOG, logging.WARNING, "issue_voided", keys=len(issued), error=str(e))
            for p in live:
                if not p.future.done():
                    p.future.set_exception(PeerUnavailable(str(e)))
            return
        self.batches += 1
        for p, r in zip(live, results, strict=True):
            if p.future.done():  # caller went away after carving: the key is lost, never reused
                if r:
                    self._store.void([k.key_id for k in r])
                continue
            if r is None:
                p.future.set_exception(OutOfKeys())
            else:
                self.keys_issued += len(r)
                p.future.set_result(r)

    async def flush_outbox(self) -> None:
        """Deliver every queued notice to the peer, in order; raises PeerUnavailable."""
        async with self._flush_lock:
            while True:
                notices = self._store.outbox(_OUTBOX_BATCH)
                if not notices:
                    return
                reply = await self._peer.post(
                    "/link/v1/notices", {"notices": encode_notices(notices)}
                )
                applied = reply.get("applied_up_to")
                if isinstance(applied, bool) or not isinstance(applied, int):
                    raise PeerUnavailable(f"peer answered a bad acknowledgement: {reply}")
                if applied < notices[0].seq:
                    raise PeerUnavailable(f"peer applied up to {applied}, below {notices[0].seq}")
                self._store.ack_outbox(applied)

    async def retry_loop(self, interval: float = 1.0) -> None:
        """Re-deliver notices left over from a crash or a peer outage."""
        while True:
            await asyncio.sleep(interval)
            if self._store.outbox(1):
                with contextlib.suppress(PeerUnavailable, LinkDesync):
                    await self.flush_outbox()


def apply_peer_notices(store: KeyStore, raw: object, peer_id: str) -> int:
    """Server side of /link/v1/notices."""
    return store.apply_notices(decode_notices(raw, peer_id))
