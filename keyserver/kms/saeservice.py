"""The SAE service: ETSI GS QKD 014 for the SAEs registered at this node.

The :class:`~keyserver.etsi014.server.KeyService` behind the node's SAE listener
(:mod:`keyserver.etsi014.server` parses and answers the HTTP): who may call (a registered local
SAE), ``status`` towards a slave SAE anywhere in the network (with the route, link and relay
figures of the status extension), ``enc_keys`` (keys made here when both SAEs are local, else
relayed by the relay agent to the slave's node, which holds them; a one-hop route gives
direct keys, :mod:`keyserver.kms.directkey`) and ``dec_keys`` (held keys taken once, and the
slices of direct keys verified and consumed once, erased in the same store transaction).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from typing import Any

from keyserver.etsi014 import messages as etsi014
from keyserver.etsi014.key import Key
from keyserver.etsi014.messages import EtsiError, KeyRequest, Limits, Status
from keyserver.kms import directkey, relay
from keyserver.kms.heldkeys import KeysNotFound
from keyserver.kms.linkstate import LinkStateAgent
from keyserver.kms.nodecontext import NodeContext, now_ms
from keyserver.kms.nodestore import NodeStore
from keyserver.kms.relayinitiator import RelayInitiator


class SaeService:
    def __init__(
        self, ctx: NodeContext, linkstate: LinkStateAgent, initiator: RelayInitiator
    ) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self.linkstate = linkstate
        self.initiator = initiator

    @property
    def store(self) -> NodeStore:
        return self.ctx.store

    @property
    def kme_id(self) -> str:
        return self.ctx.id

    @property
    def limits(self) -> Limits:
        return self.config.limits

    def authorise(self, caller: str | None) -> str:
        if caller is None:
            raise EtsiError(401, "a client certificate signed by the KME's CA is required")
        if caller not in self.config.local_saes():
            raise EtsiError(401, f"SAE {caller!r} is not registered at KME {self.ctx.id}")
        return caller

    def _peer_node(self, sae: str, role: str) -> str:
        node = self.config.topology.sae_node(sae)
        if node is None:
            known = ", ".join(s.id for s in self.config.topology.saes)
            raise etsi014.bad_request(
                f"{role} {sae!r} is not an SAE of this network (known: {known})", parameter=role
            )
        return node

    def _status_extension(self, master: str, slave: str, dst: str) -> dict[str, Any]:
        ext: dict[str, Any] = {}
        if dst == self.ctx.id:
            ext["route"] = {"nodes": [self.ctx.id], "links": [], "hops": 0, "legs": 0}
            ext["qkd_link"] = {"eavesdropper_alarm": False, "links": []}
        else:
            need = self.limits.key_size // 8 + relay.MAC_KEY_BYTES
            ext.update(self.linkstate.route_view(dst, need))
        ext["relay"] = self.initiator.pair_status(master, slave)
        ext["network"] = {"down_links": self.linkstate.down_links()}
        return ext

    async def status(self, master: str, slave: str) -> Status:
        dst = self._peer_node(slave, "slave_SAE_ID")
        ext = self._status_extension(master, slave, dst)
        stock = 0
        if dst == self.ctx.id:
            stock = self.config.max_key_count
        elif ext["route"] is not None:
            stock = self.linkstate.leg_stock_bits(ext["route"]["all"]) // self.limits.key_size
        return Status(
            source_kme_id=self.ctx.id,
            target_kme_id=dst,
            master_sae_id=master,
            slave_sae_id=slave,
            stored_key_count=stock,
            max_key_count=self.config.max_key_count,
            limits=self.limits,
            status_extension=ext,
        )

    async def enc_keys(self, master: str, slave: str, req: KeyRequest) -> Sequence[Key]:
        dst = self._peer_node(slave, "slave_SAE_ID")
        if dst != self.ctx.id:
            return await self.initiator.request(master, slave, dst, req)
        expires = now_ms() + int(self.config.hold_seconds * 1000)
        keys = [Key.of(uuid.uuid4(), os.urandom(req.size_bytes)) for _ in range(req.number)]
        self.store.held.issue_local(master, slave, keys, expires)
        return keys

    async def dec_keys(
        self, slave: str, master: str, key_ids: Sequence[uuid.UUID]
    ) -> Sequence[Key]:
        direct = self._direct_claims(master, slave, key_ids)
        try:
            keys = self.store.take_keys(master, slave, key_ids, direct)
        except KeysNotFound:
            raise etsi014.bad_request(etsi014.MSG_NOT_FOUND) from None
        if direct:
            self.ctx.counters["direct_keys_delivered"] += len(direct)
            for b, ref in direct.values():
                link = self.ctx.links[b.link]
                link.bits_spent_payload += 8 * ref.size_bytes
                link.bits_spent_auth += 8 * directkey.MAC_KEY_BYTES
        return keys

    def _direct_claims(
        self, master: str, slave: str, key_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, tuple[directkey.Binding, directkey.DirectRef]]:
        """The direct key IDs among `key_ids`, each with the binding its tag must match: the
        master SAE's node's stream on its link to this node. A direct-form ID that cannot be
        ours (master not at a neighbour, malformed) is not found, like any unknown ID."""
        out: dict[uuid.UUID, tuple[directkey.Binding, directkey.DirectRef]] = {}
        for kid in key_ids:
            if not directkey.is_direct(kid):
                continue
            ref = directkey.decode_id(kid)
            owner = self.config.topology.sae_node(master)
            link = next(
                (x for x in self.ctx.links.values() if owner is not None and x.neighbour == owner),
                None,
            )
            if ref is None or link is None:
                raise etsi014.bad_request(etsi014.MSG_NOT_FOUND)
            out[kid] = (directkey.Binding(link.neighbour, link.spec.id, master, slave), ref)
        return out
