"""One of a node's QKD links as that node sees it: its role, its module, what it knows of it.

The link manager (:mod:`keyserver.kms.linkmanager`) keeps these fields current; the link-state
agent reads :meth:`LocalLink.report` into the node's LSA, and the relay agent marks the slices
of a hop in flight (so that a sync does not count them as spent yet).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from enum import Enum

from keyserver.kms.moduleclient import ModuleApi, ModuleStatus
from keyserver.kms.routing import DownReason, LinkReport
from keyserver.topology import LinkSpec


class LinkRole(Enum):
    """Which module of the link this node hosts (the node state's ``role`` field)."""

    TRANSMITTER = "transmitter"  # this node draws key from its module and announces it
    RECEIVER = "receiver"  # this node fetches the announced keys from its module


class ModuleState(Enum):
    """The module states a node acts on (a module reports others while it starts)."""

    RUNNING = "running"
    ABORTED = "aborted"


@dataclass
class LocalLink:
    """One of this node's links, as this node sees it."""

    spec: LinkSpec
    neighbour: str
    role: LinkRole
    module: ModuleApi
    status: ModuleStatus | None = None
    module_error: str = ""
    neighbour_ok: bool = True
    synced: bool = False
    desyncs: int = 0
    in_flight: dict[int, int] = field(default_factory=dict)  # spend start -> count
    announce_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # look at the module now
    poke: asyncio.Event = field(default_factory=asyncio.Event)  # sync with the neighbour now
    misses: int = 0  # module status requests in a row that failed (the next one backs off)
    # monotonic time of the last sync exchange (from creation: a starting node gives its
    # neighbour the whole timeout before calling it unreachable)
    last_sync: float = field(default_factory=time.monotonic)
    bits_spent_payload: int = 0
    bits_spent_auth: int = 0
    bits_drawn: int = 0

    @property
    def transmitter(self) -> bool:
        """This node hosts the transmitter module (it draws and announces)."""
        return self.role is LinkRole.TRANSMITTER

    def report(self, stock_bits: int) -> LinkReport:
        st = self.status
        reason: DownReason | None = None
        if st is None:
            reason = DownReason.MODULE_UNREACHABLE
        elif st.alarm:
            reason = DownReason.EAVESDROPPER
        elif st.state == ModuleState.ABORTED.value:
            reason = DownReason.ABORTED
        elif st.state != ModuleState.RUNNING.value:
            reason = DownReason.NOT_RUNNING
        elif not self.neighbour_ok:
            reason = DownReason.NEIGHBOUR_UNREACHABLE
        elif not self.synced:
            reason = DownReason.SYNCING
        return LinkReport(
            link=self.spec.id,
            up=reason is None,
            reason=reason,
            alarm=bool(st and st.alarm),
            qber=st.qber if st else None,
            rate_bps=st.rate_bps if st else 0.0,
            stock_bits=stock_bits,
            module_state=st.state if st else "unreachable",
        )
