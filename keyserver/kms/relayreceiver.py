"""The relay agent, transit and target side: a hop message arriving at this node.

``POST /kmapi/v1/ext_keys`` (:meth:`RelayReceiver.h_ext_keys`) from the route's previous node:
the header is checked (:func:`keyserver.kms.relaymachine.check_hop`), the slice it names is read
and its one-time MAC verified (:func:`keyserver.kms.relay.open_hop`; a forged message burns the
slice). A **transit** node consumes the incoming slice and spends the next link's in one store
transaction, answers 202 and sends the next hop (a refusal there goes back to the initiator as a
``failed`` ack). The **target** stores the leg and, once every leg is in, holds the keys for the
slave SAE (collected with ``dec_keys`` through :mod:`keyserver.kms.saeservice`) and queues the
ack, in one transaction; a leg sent straight to it is acknowledged by the reply itself. The ack
outbox sends until the initiator answers; the initiator's void (``/kmapi/v1/ext_keys/void``)
erases what is held; held keys the slave never collects expire and are reported as voided.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from keyserver.etsi014 import messages as etsi014
from keyserver.etsi014.messages import EtsiError
from keyserver.etsi014.server import json_response
from keyserver.jsonlog import log
from keyserver.kms import relay, relaymachine
from keyserver.kms.linkkeystore import OutOfLinkKey, SliceUnavailable, Spend
from keyserver.kms.linkmanager import LinkManager
from keyserver.kms.locallink import LocalLink
from keyserver.kms.nodeclient import NodeUnreachable
from keyserver.kms.nodecontext import NodeContext, now_ms
from keyserver.kms.nodestore import NodeStore
from keyserver.kms.relay import Ack, HopMessage, RelayFormatError, RelayHeader
from keyserver.kms.relayinitiator import (
    ACK_PATH,
    MSG_OUT_OF_KEYS,
    REASON_OUT_OF_KEYS,
    send_hop,
)
from keyserver.kms.relayjournal import FinalHop, FinalOutcome
from keyserver.kms.relaymachine import HopStatus, Refusal, Role

_LOG = logging.getLogger("keyserver.kms.node")


def _refused(r: Refusal) -> EtsiError:
    return EtsiError(r.status, r.message)


class RelayReceiver:
    def __init__(self, ctx: NodeContext, links: LinkManager) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self.links = links
        self._wake_acks = asyncio.Event()

    @property
    def store(self) -> NodeStore:
        return self.ctx.store

    def start(self) -> None:
        self.ctx.spawn(self._ack_loop())
        self.ctx.spawn(self._expire_loop())

    def held_quota_bits(self) -> int:
        """Most uncollected key one (master, slave) pair may hold at this node: the configured
        quota, capped by one local SAE's share of a link's stock cap (a pair cannot park more
        than its slave's share of what a link could supply)."""
        cfg = self.config
        share = cfg.max_key_count * cfg.limits.key_size // max(1, len(cfg.local_saes()))
        return min(share, cfg.quota_bits_per_pair)

    async def h_ext_keys(self, request: web.Request) -> web.Response:
        ctx = self.ctx
        obj = await ctx.node_body(request)
        caller = ctx.node_caller(request)
        try:
            m = relay.decode_hop(obj)
        except RelayFormatError as e:
            raise etsi014.bad_request(f"bad ext_keys message: {e}") from None
        h = m.header
        link = ctx.links.get(h.link)
        refusal = relaymachine.check_hop(
            h,
            node=ctx.id,
            caller=caller,
            link_neighbour=link.neighbour if link is not None else None,
            initiator_ack_url=self.config.node_urls.get(h.initiator_node, "") + ACK_PATH,
            now_ms=now_ms(),
        )
        if refusal is not None:
            raise _refused(refusal)
        assert link is not None
        incoming = (h.link, caller, h.pad_start, h.slice_length)
        try:
            sl = self.store.link_keys.peek(*incoming)
        except SliceUnavailable as e:
            ctx.counters["hops_refused"] += 1
            raise etsi014.bad_request(f"key not present: {e}") from None
        try:
            keys = relay.open_hop(m, sl)
        except RelayFormatError as e:
            self.store.link_keys.burn(*incoming)
            ctx.counters["hops_refused"] += 1
            raise etsi014.bad_request(str(e)) from None
        link.bits_spent_payload += 8 * h.total
        link.bits_spent_auth += 8 * relay.MAC_KEY_BYTES
        if ctx.recorder is not None:
            ctx.recorder.view(
                relay_id=str(h.relay_id),
                leg=h.leg,
                legs=h.legs,
                key_ids=[str(k) for k in h.key_ids],
                keys=[k.hex() for k in keys],
                route=list(h.route),
            )
        if relaymachine.hop_role(h) is Role.TARGET:
            self.links.spent(link)
            return self._final_hop(h, incoming, keys)
        return self._forward(h, link, incoming, keys)

    def _forward(
        self,
        h: RelayHeader,
        link: LocalLink,
        incoming: tuple[str, str, int, int],
        keys: list[bytes],
    ) -> web.Response:
        """Transit: consume the incoming slice and spend the next link's (one transaction),
        then send the next hop in the background (202 at once)."""
        ctx = self.ctx
        nxt = relaymachine.next_node(h)
        out_link = next((x for x in ctx.links.values() if x.neighbour == nxt), None)
        if out_link is None:
            raise etsi014.bad_request(f"{ctx.id} has no link to {nxt}")
        if not out_link.synced:
            raise EtsiError(503, f"link {out_link.spec.id} is not in sync yet")
        try:
            _, out = self.store.link_keys.forward(
                incoming, Spend(out_link.spec.id, ctx.id, h.slice_length)
            )
        except SliceUnavailable as e:
            raise etsi014.bad_request(f"key not present: {e}") from None
        except OutOfLinkKey as e:
            raise EtsiError(
                503,
                f"{MSG_OUT_OF_KEYS} (link {e.link})",
                [{"reason": REASON_OUT_OF_KEYS, "link": e.link}],
            ) from None
        out_link.in_flight[out.start] = 1
        self.links.spent(out_link)
        self.links.spent(link)
        msg = relaymachine.forward_message(h, keys, out_link.spec.id, out.start, out.material)
        ctx.counters["hops_forwarded"] += 1
        ctx.spawn_transient(self._send_on(msg, out_link, out.start))
        return json_response(202, {"status": HopStatus.ACCEPTED.value})

    async def _send_on(self, msg: HopMessage, out_link: LocalLink, start: int) -> None:
        reply = await send_hop(self.ctx, msg)
        out_link.in_flight.pop(start, None)
        out_link.bits_spent_payload += 8 * msg.header.total
        out_link.bits_spent_auth += 8 * relay.MAC_KEY_BYTES
        if reply.error is not None:
            h = msg.header
            await self.ctx.post_quiet(
                h.initiator_node,
                ACK_PATH,
                relay.encode_ack(relaymachine.failed_hop_ack(h, reply.error)),
            )

    def _final_hop(
        self, h: RelayHeader, incoming: tuple[str, str, int, int], shares: list[bytes]
    ) -> web.Response:
        """Target: store this leg; with every leg in, the keys are held for the slave SAE and
        the ack queued (one transaction)."""
        ctx, cfg = self.ctx, self.config
        refusal = relaymachine.check_target(
            h,
            node=ctx.id,
            local_saes=cfg.local_saes(),
            initiator_sae_node=cfg.topology.sae_node(h.initiator_sae),
        )
        if refusal is not None:
            raise _refused(refusal)
        f = FinalHop(
            h.relay_id,
            h.key_ids,
            h.leg,
            h.legs,
            h.initiator_sae,
            h.target_sae,
            h.initiator_node,
            h.ack_url,
            tuple(shares),
            h.deadline_ms,
            now_ms() + int(cfg.hold_seconds * 1000),
            self.held_quota_bits(),
            ack_in_reply=relaymachine.acked_in_reply(h),
        )
        try:
            outcome = self.store.accept_leg(incoming, f)
        except SliceUnavailable as e:
            raise etsi014.bad_request(f"key not present: {e}") from None
        if outcome is FinalOutcome.COMPLETE:
            ctx.counters["relays_received"] += 1
        if not f.ack_in_reply:
            self._wake_acks.set()
        return json_response(202, {"status": outcome.value})

    async def h_void(self, request: web.Request) -> web.Response:
        obj = await self.ctx.node_body(request)
        caller = self.ctx.node_caller(request)
        try:
            v = relay.decode_void(obj)
        except RelayFormatError as e:
            raise etsi014.bad_request(f"bad void: {e}") from None
        if not relaymachine.may_void(self.store.held.initiator(v.relay_id), caller):
            raise EtsiError(401, "only the relay's initiator may void it")
        status = self.store.void_in(v.relay_id, v.until_ms)
        self.ctx.counters["voids_received"] += 1
        return json_response(200, {"key_ids": [str(k) for k in v.key_ids], "status": status.value})

    async def _ack_loop(self) -> None:
        retry: float | None = 0.0  # a restarted node sends what its outbox still holds
        while True:
            await self.ctx.sleep_or(self._wake_acks, retry)
            left = False
            for a in self.store.relays.acks_out():
                try:
                    await self.ctx.post(
                        a.initiator_node,
                        ACK_PATH,
                        relay.encode_ack(Ack(a.relay_id, a.key_ids, a.status, a.reason)),
                    )
                except NodeUnreachable as e:
                    if relaymachine.outbox_gives_up(e.status):
                        self.store.relays.ack_done(a.relay_id)
                    else:
                        left = True
                    continue
                self.store.relays.ack_done(a.relay_id)
            retry = relaymachine.outbox_retry(left, retry)

    async def _expire_loop(self) -> None:
        """Held keys expire within a tenth of ``hold_seconds`` (at most 30 s) of their time."""
        ctx = self.ctx
        period = min(30.0, self.config.hold_seconds / 10)
        while True:
            await asyncio.sleep(ctx.jittered(period))  # (local work only: not counted)
            for rid, node, kids in self.store.expire(now_ms()):
                ctx.counters["held_expired"] += len(kids)
                log(_LOG, logging.INFO, "held_keys_expired", relay_id=str(rid), keys=len(kids))
                if node != ctx.id:
                    await ctx.post_quiet(
                        node, ACK_PATH, relay.encode_ack(relaymachine.expired_ack(rid, kids))
                    )
