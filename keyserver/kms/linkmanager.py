"""The link manager: link key drawn from the modules, announced, and kept in sync.

Per link (:class:`~keyserver.kms.locallink.LocalLink`), the **transmitter side** looks at its
module (state, alarm, key held), draws keys with ``enc_keys`` while the link's stock is below
its cap, journals them as pending and announces their IDs to the neighbour
(``POST /kms/v1/link/announce``); the **receiver side** fetches exactly those IDs from its own
module with ``dec_keys``. Both append them to the link's two streams (one per owner,
:mod:`keyserver.kms.linkstream`). The transmitter side then syncs (``POST /kms/v1/link/sync``):
both compare their stream ends, layouts and cursors (:func:`keyserver.kms.linkstream.compare`)
and a desync is repaired by cutting both streams back to what both hold. The receiver side
times the neighbour out when no sync comes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from keyserver.etsi014 import messages as etsi014
from keyserver.etsi014.key import Key
from keyserver.etsi014.messages import EtsiError
from keyserver.etsi014.server import json_response
from keyserver.jsonlog import log
from keyserver.kms import linkstream
from keyserver.kms.linkkeystore import Block
from keyserver.kms.linkstate import LinkStateAgent
from keyserver.kms.linkstream import StreamView, SyncState, SyncVerdict
from keyserver.kms.locallink import LocalLink
from keyserver.kms.moduleclient import ModuleRefused, ModuleStatus, ModuleUnavailable
from keyserver.kms.nodeclient import NodeUnreachable
from keyserver.kms.nodecontext import SYNC_PATH, NodeContext
from keyserver.kms.nodestore import NodeStore

_LOG = logging.getLogger("keyserver.kms.node")
ANNOUNCE_PATH = "/kms/v1/link/announce"
MAX_DRAW_KEYS = 512  # module keys per draw (one enc_keys request to the module)


class LinkManager:
    def __init__(self, ctx: NodeContext, linkstate: LinkStateAgent) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self.linkstate = linkstate
        self._spent_bucket: dict[str, int] = {}  # link -> own stock's bit length at the last spend
        self._sync_misses: dict[str, int] = {}  # link -> syncs in a row that got no answer
        # link -> (monotonic time, cursor) the neighbour reported for its own stream, oldest
        # first: its bytes below a cursor are erased only hold_seconds after it was reported,
        # so that a one-hop direct key (kms/directkey.py) stays claimable by its slave SAE
        self._cursor_reports: dict[str, collections.deque[tuple[float, int]]] = {}

    @property
    def store(self) -> NodeStore:
        return self.ctx.store

    def start(self) -> None:
        for link in self.ctx.links.values():
            self.ctx.spawn(self._link_loop(link))
            self.ctx.spawn(self._sync_loop(link))

    def cap_bytes(self) -> int:
        return self.config.max_key_count * self.config.limits.key_size // 8

    def _hungry(self, link: LocalLink) -> bool:
        """The link wants key soon: not in sync, module unknown, or below a quarter of its cap."""
        if link.status is None or not link.synced:
            return True
        if not link.transmitter:
            return False
        lid = link.spec.id
        low = min(self.store.link_keys.stock_bytes(lid, o) for o in (link.spec.a, link.spec.b))
        return low < self.cap_bytes() // 4

    def _refilling(self, link: LocalLink) -> bool:
        """The link's lower stock is a quarter or more below the cap: draw now, in batches."""
        lid, cap = link.spec.id, self.cap_bytes()
        low = min(self.store.link_keys.stock_bytes(lid, o) for o in (link.spec.a, link.spec.b))
        return low <= cap - cap // 4

    def spent(self, link: LocalLink) -> None:
        """A relay spent key on `link`: wake its transmitter side to draw more once the stock
        is a quarter below the cap (then it draws a batch), not after every relay."""
        if link.transmitter and self._refilling(link):
            link.wake.set()
        bucket = (8 * self.store.link_keys.stock_bytes(link.spec.id, self.ctx.id)).bit_length()
        if self._spent_bucket.get(link.spec.id) != bucket:  # not every relay: the LSA flood
            self._spent_bucket[link.spec.id] = bucket  # looks at the stock to a factor of two
            self.linkstate.changed()

    # -- drawing and announcing ------------------------------------------------------------------
    async def _link_loop(self, link: LocalLink) -> None:
        """Look at the module (its state, alarm, key) and draw key; event-driven when idle.

        Keys are drawn as long as the module holds some and the stock is below its cap. Then
        the loop waits until a relay spends key on the link (``link.wake``) or the module's
        status moves on: a module that can be watched (:mod:`keyserver.etsi014.statuswatch`)
        holds one Get status until it has news (a block, a state change),
        at most ``timers.module_watch`` seconds, so an idle link asks nothing on a clock. A
        KME that cannot be watched is asked every ``timers.module_poll`` seconds
        (``hungry_poll`` while the link is below a quarter of its cap or not in sync); a
        module that does not answer, from ``hungry_poll`` doubling up to ``module_poll``.
        """
        ctx = self.ctx
        watch: asyncio.Task[ModuleStatus] | None = None
        try:
            while True:
                was = link.report(0)
                try:
                    if watch is not None and watch.done():
                        done, watch = watch, None
                        link.status = done.result()  # what the module said when it moved on
                    else:
                        ctx.counters["module_polls"] += 1
                        link.status = await link.module.status()
                    link.module_error, link.misses = "", 0
                except (ModuleUnavailable, ModuleRefused) as e:
                    link.module_error = str(e)
                    link.misses += 1
                    if link.misses >= self.config.timers.dead_misses:  # else: its last status
                        link.status = None
                now = link.report(0)
                if (was.up, was.reason) != (now.up, now.reason):
                    log(
                        _LOG,
                        logging.INFO if now.up else logging.WARNING,
                        "link_state",
                        link=link.spec.id,
                        up=now.up,
                        reason=now.reason.value if now.reason else None,
                        error=link.module_error or None,
                    )
                    self.linkstate.changed(urgent=True)
                elif link.status is not None:  # its rate may have moved: the agent floods
                    self.linkstate.status_arrived(now)  # what moved enough (in a batch)
                drew = more = False
                if link.transmitter and link.status is not None:
                    with contextlib.suppress(NodeUnreachable, ModuleUnavailable, ModuleRefused):
                        drew, more = await self._draw(link, link.status)
                if drew:
                    self.linkstate.changed()
                if more:
                    continue  # the module may hold more than it gave: draw again at once
                t = self.config.timers
                version = link.status.version if link.status is not None else None
                if version is not None and t.module_watch > 0 and not link.misses:
                    if watch is None:
                        ctx.counters["module_watches"] += 1
                        watch = asyncio.ensure_future(
                            link.module.status(after=version, wait=ctx.jittered(t.module_watch))
                        )
                    await ctx.sleep_or(link.wake, None, also=watch)
                    continue
                wait = t.hungry_poll if self._hungry(link) else t.module_poll
                if link.misses:  # module down: back off from hungry_poll to module_poll
                    wait = min(t.module_poll, t.hungry_poll * 2 ** min(link.misses - 1, 16))
                await ctx.sleep_or(link.wake, ctx.jittered(wait))
        finally:
            if watch is not None:
                watch.cancel()

    async def _draw(self, link: LocalLink, st: ModuleStatus) -> tuple[bool, bool]:
        """Draw one batch: whether keys were drawn, and whether to draw again at once (the
        batch was less than the stock lacked: the module held fewer keys, or a batch is at
        most MAX_DRAW_KEYS). A batch that made up what the stock lacked when it was asked
        for ends the round even if relays spent more meanwhile: under a steady spend the
        stock is refilled in batches once it falls a quarter below the cap (:meth:`spent`),
        not by a module round trip and an announcement for every few keys spent."""
        async with link.announce_lock:
            for seq, blocks in self.store.link_keys.pending(link.spec.id):
                await self._announce(link, seq, blocks)
            if not link.synced:
                return False, False
            lid = link.spec.id
            stocks = {
                o: self.store.link_keys.stock_bytes(lid, o) for o in (link.spec.a, link.spec.b)
            }
            cap = self.cap_bytes()
            if min(stocks.values()) >= cap or st.stored_key_count < 1:
                return False, False
            block = st.key_size // 8
            # what both streams lack (a batch is shared out to the one that holds less)
            want = max(1, sum(max(0, cap - v) for v in stocks.values()) // max(block, 1))
            n = min(st.stored_key_count, st.max_key_per_request, want, MAX_DRAW_KEYS)
            keys = await link.module.enc_keys(n, st.key_size)
            owners = linkstream.assign_owners(len(keys), stocks, block)
            blocks = [
                Block(k.key_id, o, bytes(k.material)) for k, o in zip(keys, owners, strict=True)
            ]
            seq = self.store.link_keys.next_announce_seq(lid)
            self.store.link_keys.add_pending(lid, seq, blocks)
            link.bits_drawn += 8 * block * len(blocks)
            await self._announce(link, seq, blocks)
            return True, len(keys) < want

    async def _announce(self, link: LocalLink, seq: int, blocks: Sequence[Block]) -> None:
        body = {
            "link": link.spec.id,
            "seq": seq,
            "keys": [{"key_ID": str(b.key_id), "owner": b.owner} for b in blocks],
        }
        reply = await self.ctx.post(link.neighbour, ANNOUNCE_PATH, body)
        got_raw = reply.get("got")
        if reply.get("seq") != seq or not isinstance(got_raw, list):
            raise NodeUnreachable("bad announcement reply")
        got = [uuid.UUID(str(g)) for g in got_raw]
        self.store.link_keys.confirm(link.spec.id, seq, got)
        self.ctx.counters["announcements"] += 1
        if len(got) < len(blocks):
            log(
                _LOG,
                logging.WARNING,
                "announced_keys_missing",
                link=link.spec.id,
                seq=seq,
                missing=len(blocks) - len(got),
            )

    async def h_announce(self, request: web.Request) -> web.Response:
        obj = await self.ctx.node_body(request)
        link = self.ctx.link_from(obj, request, transmitter_caller=True)
        seq = obj.get("seq")
        keys = obj.get("keys")
        if (
            isinstance(seq, bool)
            or not isinstance(seq, int)
            or not 1 <= seq <= 2**62
            or (set(obj) != {"link", "seq", "keys"} or not isinstance(keys, list))
            or not 1 <= len(keys) <= 4096
        ):
            raise etsi014.bad_request(
                "announcement must be exactly {link, seq: 1..2^62, keys[1..4096]}"
            )
        owners = {link.spec.a, link.spec.b}
        entries: list[tuple[uuid.UUID, str]] = []
        for k in keys:
            if not isinstance(k, dict) or set(k) != {"key_ID", "owner"} or k["owner"] not in owners:
                raise etsi014.bad_request("announcement keys are {key_ID, owner of this link}")
            entries.append((etsi014.parse_key_id(k["key_ID"]), str(k["owner"])))
        async with link.announce_lock:
            last = self.store.link_keys.announce_seq(link.spec.id)
            if seq <= last:
                got = self.store.link_keys.announced(link.spec.id, seq)
                return json_response(200, {"seq": seq, "got": [str(g) for g in got or []]})
            if seq > last + 1:
                log(
                    _LOG,
                    logging.WARNING,
                    "announcement_gap",
                    link=link.spec.id,
                    expected=last + 1,
                    got=seq,
                )
            st = link.status
            size = st.key_size if st is not None else 0
            fetched = await self._fetch(link, [k for k, _ in entries], size)
            owner_of = dict(entries)
            blocks = [Block(k.key_id, owner_of[k.key_id], bytes(k.material)) for k in fetched]
            self.store.link_keys.apply_announcement(link.spec.id, seq, blocks)
            self.linkstate.changed()  # flooded if the stock grew by a factor of two
        return json_response(200, {"seq": seq, "got": [str(b.key_id) for b in blocks]})

    async def _fetch(self, link: LocalLink, ids: list[uuid.UUID], size: int) -> list[Key]:
        """dec_keys at the receiver module; keys it does not hold are left out."""
        if size <= 0:
            try:
                link.status = await link.module.status()
            except (ModuleUnavailable, ModuleRefused) as e:
                raise EtsiError(503, f"module of link {link.spec.id} unreachable") from e
            size = link.status.key_size
        per = link.status.max_key_per_request if link.status else 128
        out: list[Key] = []
        for i in range(0, len(ids), per):
            chunk = ids[i : i + per]
            try:
                out += await link.module.dec_keys(chunk, size)
            except ModuleRefused:  # some IDs unknown: find which, one by one
                for kid in chunk:
                    with contextlib.suppress(ModuleRefused):
                        out += await link.module.dec_keys([kid], size)
            except ModuleUnavailable as e:
                if out:
                    break  # keep what we have; the rest is refused below
                raise EtsiError(503, f"module of link {link.spec.id} unreachable: {e}") from None
        return out

    # -- sync and desync repair ------------------------------------------------------------------
    def _sync_state(self, link: LocalLink) -> SyncState:
        views: list[StreamView] = []
        for owner in (link.spec.a, link.spec.b):
            v = self.store.link_keys.view(link.spec.id, owner)
            if owner == self.ctx.id and link.in_flight:
                v = StreamView(v.owner, v.end, v.layout_hash, min(v.cursor, min(link.in_flight)))
            views.append(v)
        return SyncState(
            link.spec.id, self.ctx.id, self.store.link_keys.announce_seq(link.spec.id), tuple(views)
        )

    def _apply_sync(self, link: LocalLink, mine: SyncState, theirs: SyncState) -> None:
        """Compare two snapshots taken while no announcement was between the nodes."""
        if theirs.sender != link.neighbour:
            raise etsi014.bad_request("sync sender is not the neighbour on this link")
        lid = link.spec.id
        seen = {link.neighbour: self.store.link_keys.max_cursor_seen(lid, link.neighbour)}
        res = linkstream.compare(mine, theirs, seen, link.spec.a)
        link.last_sync = time.monotonic()
        if res.verdict is SyncVerdict.DESYNC:
            for owner, end in res.repair:
                self.store.link_keys.repair(lid, owner, end)
            self.store.link_keys.set_announce_seq(lid, res.announce_seq)
            link.synced = False
            link.desyncs += 1
            self.ctx.counters["desyncs_repaired"] += 1
            log(
                _LOG,
                logging.WARNING,
                "link_desync_repaired",
                link=lid,
                reason=res.reason,
                streams=[o for o, _ in res.repair],
            )
            self.linkstate.changed()
            return
        their_own = next(v for v in theirs.streams if v.owner == link.neighbour)
        self.store.link_keys.owner_cursor(
            lid, link.neighbour, their_own.cursor, self._erase_below(lid, their_own.cursor)
        )
        if res.verdict is SyncVerdict.CONSISTENT and not link.synced:
            link.synced = True
            link.wake.set()
            log(_LOG, logging.INFO, "link_synced", link=lid)
            self.linkstate.neighbour_up(link.neighbour)

    def _erase_below(self, lid: str, cursor: int) -> int:
        """Record the neighbour's cursor report; the highest cursor it reported at least
        ``hold_seconds`` ago (0 before any: a restarted node erases nothing for that long)."""
        now = time.monotonic()
        reports = self._cursor_reports.setdefault(lid, collections.deque())
        reports.append((now, cursor))
        hold = self.config.hold_seconds
        while len(reports) > 1 and now - reports[1][0] >= hold:
            reports.popleft()
        t, c = reports[0]
        return c if now - t >= hold else 0

    async def _sync_loop(self, link: LocalLink) -> None:
        """The transmitter side syncs (holding its announcement lock, so that no announcement
        is between the nodes while they compare); the receiver side answers and watches.

        In sync, the transmitter side syncs every ``timers.sync_heartbeat`` seconds (jittered)
        and at once when a request to the neighbour failed (``link.poke``); out of sync it
        retries after 0.3 s, doubling up to the heartbeat. The receiver side declares the
        neighbour unreachable after ``timers.neighbour_timeout`` seconds without a sync.
        """
        ctx = self.ctx
        t = self.config.timers
        retry = 0.3
        while True:
            if not link.transmitter:
                left = link.last_sync + t.neighbour_timeout - time.monotonic()
                ok = left > 0
                if ok != link.neighbour_ok:
                    link.neighbour_ok = ok
                    if not ok:
                        link.synced = False
                        log(
                            _LOG,
                            logging.WARNING,
                            "neighbour_unreachable",
                            link=link.spec.id,
                            neighbour=link.neighbour,
                            error=f"no sync for {t.neighbour_timeout:g} s",
                        )
                    self.linkstate.changed(urgent=True)
                # asleep until the timeout would pass (a sync moves it) or a sync comes back
                await ctx.sleep_or(link.poke, left if ok else None)
                continue
            try:
                async with link.announce_lock:
                    sent = self._sync_state(link)
                    ctx.counters["syncs_sent"] += 1
                    reply = await ctx.post(link.neighbour, SYNC_PATH, sync_json(sent))
                    self._apply_sync(link, sent, sync_from(reply))
                self._sync_misses[link.spec.id] = 0
                if not link.neighbour_ok:
                    link.neighbour_ok = True
                    self.linkstate.changed(urgent=True)
                    self.linkstate.neighbour_up(link.neighbour)  # it may have missed floods
            except (NodeUnreachable, EtsiError) as e:
                misses = self._sync_misses.get(link.spec.id, 0) + 1
                self._sync_misses[link.spec.id] = misses
                if link.neighbour_ok and misses >= t.dead_misses:
                    log(
                        _LOG,
                        logging.WARNING,
                        "neighbour_unreachable",
                        link=link.spec.id,
                        neighbour=link.neighbour,
                        error=str(e),
                    )
                    link.neighbour_ok = False
                    self.linkstate.changed(urgent=True)
            if link.synced and link.neighbour_ok and not self._sync_misses.get(link.spec.id):
                retry = 0.3
                await ctx.sleep_or(link.poke, ctx.jittered(t.sync_heartbeat))
            else:
                await ctx.sleep_or(link.poke, retry)
                retry = min(2 * retry, t.sync_heartbeat)

    async def h_sync(self, request: web.Request) -> web.Response:
        obj = await self.ctx.node_body(request)
        link = self.ctx.link_from(obj, request, transmitter_caller=True)
        theirs = sync_from(obj)
        if theirs.link != link.spec.id or {v.owner for v in theirs.streams} != {
            link.spec.a,
            link.spec.b,
        }:
            raise etsi014.bad_request(f"a sync on link {link.spec.id} is about its two streams")
        async with link.announce_lock:  # not in the middle of applying an announcement
            mine = self._sync_state(link)
            self._apply_sync(link, mine, theirs)
        if not link.neighbour_ok:
            link.neighbour_ok = True
            link.poke.set()  # the watcher goes back to timing the neighbour out
            self.linkstate.changed(urgent=True)
            self.linkstate.neighbour_up(link.neighbour)  # it may have missed floods
        return json_response(200, sync_json(mine))


def sync_json(s: SyncState) -> dict[str, Any]:
    return {
        "link": s.link,
        "sender": s.sender,
        "announce_seq": s.announce_seq,
        "streams": [
            {"owner": v.owner, "end": v.end, "layout": v.layout_hash.hex(), "cursor": v.cursor}
            for v in s.streams
        ],
    }


def sync_from(obj: Any) -> SyncState:
    """A sync message, strictly (anything else is a 400 and changes nothing): exactly
    {link, sender, announce_seq, streams}, two streams of distinct owners, each exactly
    {owner, end, layout, cursor} with integer positions 0 <= cursor <= end <= 2^62 and a
    32-byte layout hash in hex."""
    bad = etsi014.bad_request(
        "sync must be {link, sender, announce_seq: 0..2^62, streams: two of {owner, "
        "end: 0..2^62, layout: 64 hex digits, cursor: 0..end}}"
    )

    def pos(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 2**62:
            raise bad
        return v

    def name(v: Any) -> str:
        if not isinstance(v, str) or not etsi014.valid_sae_id(v):
            raise bad
        return v

    if not isinstance(obj, dict) or set(obj) != {"link", "sender", "announce_seq", "streams"}:
        raise bad
    raw = obj["streams"]
    if not isinstance(raw, list) or len(raw) != 2:
        raise bad
    streams = []
    for v in raw:
        if not isinstance(v, dict) or set(v) != {"owner", "end", "layout", "cursor"}:
            raise bad
        layout = v["layout"]
        if not isinstance(layout, str) or len(layout) != 64:
            raise bad
        try:
            digest = bytes.fromhex(layout)
        except ValueError:
            raise bad from None
        end, cursor = pos(v["end"]), pos(v["cursor"])
        if cursor > end:
            raise bad
        streams.append(StreamView(name(v["owner"]), end, digest, cursor))
    if streams[0].owner == streams[1].owner:
        raise bad
    return SyncState(
        name(obj["link"]), name(obj["sender"]), pos(obj["announce_seq"]), tuple(streams)
    )
