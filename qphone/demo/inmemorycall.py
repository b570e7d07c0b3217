"""Two endpoints of the security core wired together in memory, with an in-memory KME pair.

Used by ``qphone demo`` (before a network is involved), by the crypto benchmark and by tests.
The "KME pair" here is the smallest thing that behaves like one for the core: ``enc_keys``
hands out fresh random keys with new IDs at site A, and ``dec_keys`` at site B serves each ID
exactly once. The real ETSI 014 key managers live in ``keyserver``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from qphone.core.callparams import CallParams
from qphone.core.events import (
    FetchQkdKeys,
    HandshakeComplete,
    ResolveQkdKeys,
    SendControl,
    SessionEvent,
)
from qphone.core.handshake import HandshakeResult, Initiator, Responder, ResponderPolicy
from qphone.core.identity import Identity
from qphone.core.qkd import QkdKey
from qphone.core.session import CallSession, new_session


@dataclass
class MemoryKmePair:
    """enc_keys at one site, dec_keys (each ID once) at the other."""

    _held: dict[uuid.UUID, bytes] = field(default_factory=dict)
    issued_bits: int = 0

    def enc_keys(self, number: int, bits: int) -> list[QkdKey]:
        keys = [QkdKey(uuid.uuid4(), os.urandom(bits // 8)) for _ in range(number)]
        for k in keys:
            self._held[k.key_id] = k.material
        self.issued_bits += number * bits
        return keys

    def dec_keys(self, key_ids: Sequence[uuid.UUID]) -> list[QkdKey]:
        missing = [k for k in key_ids if k not in self._held]
        if missing:
            raise KeyError(f"keys not found on KME: {missing}")
        return [QkdKey(k, self._held.pop(k)) for k in key_ids]


def handshake(
    a: Identity,
    b: Identity,
    params: CallParams,
    kme: MemoryKmePair,
    binding_a: bytes | None = None,
    binding_b: bytes | None = None,
    policy: ResponderPolicy | None = None,
) -> tuple[HandshakeResult, HandshakeResult]:
    """Run the three-message handshake; return (initiator result, responder result)."""
    binding = os.urandom(32)
    keys = [] if params.pqc_only else kme.enc_keys(1, params.handshake_qkd_bits)
    ini = Initiator(a, params, keys, binding_a or binding)
    res = Responder(b, binding_b or binding, policy or ResponderPolicy.anything_valid())
    events = res.receive(ini.start())
    if isinstance(events[0], ResolveQkdKeys):
        events = res.provide_qkd_keys(kme.dec_keys(list(events[0].key_ids)))
    assert isinstance(events[0], SendControl)
    out_i = ini.receive(events[0].data)
    assert isinstance(out_i[0], SendControl) and isinstance(out_i[1], HandshakeComplete)
    out_r = res.receive(out_i[0].data)
    assert isinstance(out_r[0], HandshakeComplete)
    return out_i[1].result, out_r[0].result


class InMemoryCall:
    """Initiator and responder sessions exchanging control messages through in-memory queues."""

    def __init__(
        self,
        ini: HandshakeResult,
        res: HandshakeResult,
        kme: MemoryKmePair,
        pad_lookahead_s: float | None = None,
    ) -> None:
        self.initiator = new_session(ini, pad_lookahead_s=pad_lookahead_s)
        self.responder = new_session(res)
        self.kme = kme
        self._inbox: dict[int, list[bytes]] = {id(self.initiator): [], id(self.responder): []}
        self.log: list[tuple[CallSession, SessionEvent]] = []  # every event, in order
        self.dispatch(self.initiator, self.initiator.start())

    def peer(self, s: CallSession) -> CallSession:
        return self.responder if s is self.initiator else self.initiator

    def dispatch(self, s: CallSession, events: list[SessionEvent]) -> None:
        for ev in events:
            self.log.append((s, ev))
            if isinstance(ev, SendControl):
                self._inbox[id(self.peer(s))].append(ev.data)
            elif isinstance(ev, FetchQkdKeys):
                s.provide_qkd_keys(ev.purpose, self.kme.enc_keys(ev.count, ev.bits))
            elif isinstance(ev, ResolveQkdKeys):
                s.provide_qkd_keys(ev.purpose, self.kme.dec_keys(list(ev.key_ids)))

    def pump(self) -> None:
        """Deliver queued control messages both ways and act on every event until quiet."""
        busy = True
        while busy:
            busy = False
            for s in (self.initiator, self.responder):
                events = s.events()
                if events:
                    busy = True
                    self.dispatch(s, events)
                box = self._inbox[id(s)]
                while box and not s.closed:
                    busy = True
                    s.receive_control(box.pop(0))
                    self.dispatch(s, s.events())
