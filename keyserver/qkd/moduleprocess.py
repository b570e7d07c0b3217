"""What every QKD module process does around its fidelity's block pipeline: the shared half of
the two asyncio adapters (:class:`keyserver.qkd.module.Module`, ``fidelity = "physics"``, and
:class:`keyserver.qkd.emulatedmodule.EmulatedModule`, ``fidelity = "emulated"``).

:class:`ModuleProcess` holds the lifecycle (``await start()``, ``await stop()``; ``failed`` is set
on a fatal error), the keys it reads at start (the initial authentication key, split into the two
directions' pads of :mod:`keyserver.qkd.classicalchannel`; the sealed quantum channel's key,
erased at stop), the store (:mod:`keyserver.qkd.store`) and the link's status
(:mod:`keyserver.qkd.linkstatus`), the northbound ETSI 014 API (:mod:`keyserver.qkd.northbound`),
the connections to the peer (the receiver listens on both channel addresses and pairs the two
connections into a session; the transmitter dials them, and dials again after a session ends) and
the stock's pause with hysteresis. One session at a time runs, a
:class:`keyserver.qkd.peersession.PeerSession` of the fidelity's kind.

A fidelity gives: ``FIDELITY`` (the status extension's word), ``_build()`` (its source or machines,
once the protocol parameters are known), its session class, ``eve_fraction()`` and
``_set_eve()`` (the eavesdropper at run time), and, when it needs them, ``agreed()`` (the receiver
adopted the transmitter's parameters) and ``log_fields()`` (extra fields of its log lines).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, ClassVar

from keyserver.etsi014.server import HttpLimits, Listener, start_server
from keyserver.etsi014.statuswatch import StatusWatch
from keyserver.jsonlog import log
from keyserver.pki.tls import server_context
from keyserver.qkd.blocks import BlockStats
from keyserver.qkd.classicalchannel import AuthPad, split_initial_key
from keyserver.qkd.config import ModuleConfig
from keyserver.qkd.linkstatus import LinkStatus
from keyserver.qkd.northbound import ModuleKeyService, build_app
from keyserver.qkd.peersession import PeerSession
from keyserver.qkd.physics import LinkParams
from keyserver.qkd.plancache import planned_in_background
from keyserver.qkd.role import ModuleState, Role
from keyserver.qkd.sealedchannel import read_channel_key
from keyserver.qkd.store import ModuleStore
from keyserver.tasks import cancel_all

RESUME_FRACTION = 0.8  # a paused source resumes below this fraction of the stock cap
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
# the fidelity's session class: (module, classical reader and writer, quantum reader and writer)
SessionFactory = Callable[
    [Any, asyncio.StreamReader, asyncio.StreamWriter, asyncio.StreamReader, asyncio.StreamWriter],
    PeerSession[Any],
]


class ModuleProcess:
    """One QKD module process of either fidelity. ``await start()``, then ``await stop()``."""

    FIDELITY: ClassVar[str]
    channel_key: bytearray
    store: ModuleStore
    pad: AuthPad
    status: LinkStatus
    params: LinkParams

    def __init__(
        self, config: ModuleConfig, logger: logging.Logger, session: SessionFactory
    ) -> None:
        self.config = config
        self.logger = logger  # the fidelity's: its name is each log line's "logger"
        self._new_session = session
        self.role = Role(config.role)
        self.failed = asyncio.Event()
        self.watch = StatusWatch()  # its node's watched Get status wakes when this moves on
        self._state = ModuleState.CONNECTING
        self.port = config.northbound.port
        self.quantum_port = config.quantum_port
        self.classical_port = config.classical_port
        self.session: PeerSession[Any] | None = None
        self.peer_stock = 0  # the peer's key stock, from its Hello, Heartbeat and Confirm
        self._paused = False
        self._tasks: list[asyncio.Task[None]] = []
        self._listener: Listener | None = None
        self._servers: list[asyncio.base_events.Server] = []
        self._pending: dict[str, Streams] = {}
        self._session_lock = asyncio.Lock()

    # -- what a fidelity gives -----------------------------------------------------------------
    def _build(self) -> None:
        """Make the fidelity's source or machines (``self.params`` is set)."""
        raise NotImplementedError

    def eve_fraction(self) -> float:
        """The eavesdropper's share of the fibre (the transmitter's only)."""
        raise NotImplementedError

    def _set_eve(self, fraction: float) -> float:
        raise NotImplementedError

    def agreed(self, params: LinkParams) -> None:
        """Receiver: the handshake adopted the transmitter's ``params`` and agreed the keys."""

    def log_fields(self) -> dict[str, Any]:
        """Fields this fidelity adds to ``module_started`` and ``session_up``."""
        return {}

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.config
        try:
            key = cfg.initial_auth_key.read_bytes()
        except OSError as e:
            raise ValueError(
                f"[classical_channel] initial_auth_key: cannot read "
                f"{cfg.initial_auth_key}: {e.strerror}"
            ) from None
        halves = split_initial_key(key)
        self.channel_key = read_channel_key(cfg.channel_key)
        self.store = ModuleStore(cfg.data_dir, synchronous=cfg.synchronous)
        self.store.init_auth(*halves)
        send_dir = 0 if self.role is Role.TRANSMITTER else 1
        self.pad = AuthPad(
            self.role, self.store.chunks(), self.store.reservation(send_dir), self.store
        )
        self.status = LinkStatus.from_json(self.store.get("link_status"))
        if cfg.seeded:
            log(
                self.logger,
                logging.WARNING,
                "seeded_source",
                module=cfg.id,
                message="SEEDED SOURCE: keys are reproducible and NOT secret (testing = true)",
            )
        if self.role is Role.TRANSMITTER:
            # the northbound port held while the plan is computed (seconds on a starting big
            # network): a network planned meanwhile must not see it free and take it
            with _held_port(cfg.northbound.host, cfg.northbound.port):
                self.params = await planned_in_background(cfg.params, cfg.plan_cache)
        else:
            self.params = dataclasses.replace(cfg.params, optimise=False)
        self._build()
        service = ModuleKeyService(cfg, self.store, self.status_extension, self._on_delivered)
        app, self.api = build_app(
            service, cfg, self._set_eve if self.role is Role.TRANSMITTER else None, self.watch
        )
        nb = cfg.northbound
        self._listener = await start_server(
            app, nb.host, nb.port, server_context(nb.ca_cert, nb.cert, nb.key), HttpLimits()
        )
        self.port = self._listener.port
        if self.role is Role.RECEIVER:
            qs = await asyncio.start_server(
                self._accept("quantum"), cfg.quantum_host, cfg.quantum_port
            )
            cs = await asyncio.start_server(
                self._accept("classical"), cfg.classical_host, cfg.classical_port
            )
            self._servers = [qs, cs]
            self.quantum_port = int(qs.sockets[0].getsockname()[1])
            self.classical_port = int(cs.sockets[0].getsockname()[1])
        else:
            self._spawn(self._transmitter_loop())
        log(
            self.logger,
            logging.INFO,
            "module_started",
            module=cfg.id,
            link=cfg.link,
            role=self.role,
            **self.log_fields(),
            northbound_port=self.port,
            distance_km=self.params.distance_km,
            seeded_source=cfg.seeded,
            block_pulses=self.params.block_pulses,
        )

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.append(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log(self.logger, logging.ERROR, "task_failed", error=repr(exc))
            self.failed.set()

    async def stop(self) -> None:
        self.state = ModuleState.STOPPED
        left = await cancel_all(self._tasks)
        if left:
            log(self.logger, logging.ERROR, "tasks_left_running", tasks=len(left))
        if self.session is not None:
            self.session.close()
        for s in self._servers:
            s.close()
        if self._listener is not None:
            await self._listener.cleanup()
        self._save_status()
        self.store.close()
        self.channel_key[:] = bytes(len(self.channel_key))

    # -- status --------------------------------------------------------------------------------
    @property
    def state(self) -> ModuleState:
        return self._state

    @state.setter
    def state(self, value: ModuleState) -> None:
        if value is not self._state:
            self._state = value
            self.watch.bump()

    def status_extension(self) -> dict[str, Any]:
        st = self.status
        recv_pos = self.session.opener.next_position if self.session else 0
        return {
            "link": self.config.link,
            "role": self.role,
            "fidelity": self.FIDELITY,
            "state": self.state,
            "qber": st.qber,
            "qber_ewma": st.qber_ewma,
            "key_rate_bps": st.key_rate_bps,
            "eavesdropper_alarm": st.eavesdropper_alarm,
            "blocks_ok": st.blocks_ok,
            "blocks_aborted": st.blocks_aborted,
            "last_abort_reason": st.last_abort_reason,
            "secret_bits_total": st.secret_bits_total,
            "auth_key_bits_available": self.pad.available_bits(recv_pos),
            "auth_bits_consumed": 8 * self.pad.consumed_bytes,
            "seeded_source": self.config.seeded,
            "distance_km": self.params.distance_km,
            "eve_fraction": self.eve_fraction() if self.role is Role.TRANSMITTER else None,
            "block_pulses": self.params.block_pulses,
            "stored_keys": self.store.key_count(),
            "auth_send_position": self.pad.send_pos,
            "auth_direction": self.pad.send_direction,
        }

    def _save_status(self) -> None:
        with contextlib.suppress(Exception):
            self.store.put("link_status", self.status.to_json())

    def record(self, stats: BlockStats) -> None:
        """A block finished (or aborted): into the link's status, which is saved."""
        seconds = stats.pulses / self.params.clock_hz if stats.pulses else 0.0
        self.status.record(stats, seconds)
        self._save_status()
        self.watch.bump()

    def _on_delivered(self) -> None:
        """The northbound API handed keys out: the receiver tells the transmitter its stock.
        (The status version does not move: the only caller is the node that took the keys.)"""
        if self.role is Role.RECEIVER and self.session is not None:
            self.session.heartbeat_now.set()

    # -- stock ---------------------------------------------------------------------------------
    def production_paused(self) -> bool:
        """Whether the stock (the larger of the two sides') is full: on at the cap, off again
        below ``RESUME_FRACTION`` of it."""
        cap = self.config.northbound.max_key_count
        stock = max(self.store.key_count(), self.peer_stock)
        if self._paused:
            self._paused = stock >= RESUME_FRACTION * cap
        else:
            self._paused = stock >= cap
        return self._paused

    # -- connections ---------------------------------------------------------------------------
    async def _transmitter_loop(self) -> None:
        cfg = self.config
        delay = 0.2
        while True:
            try:
                cr, cw = await asyncio.open_connection(cfg.classical_host, cfg.classical_port)
                try:
                    qr, qw = await asyncio.open_connection(cfg.quantum_host, cfg.quantum_port)
                except OSError:
                    cw.close()
                    raise
            except OSError:
                if self.state is not ModuleState.ABORTED:
                    self.state = ModuleState.CONNECTING
                await asyncio.sleep(delay)
                delay = min(delay * 1.5, 2.0)
                continue
            delay = 0.2
            await self._new_session(self, cr, cw, qr, qw).run()
            if self.state is ModuleState.ABORTED:
                return

    def _accept(
        self, kind: str
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        """The receiver's handler of one channel's connections: a classical and a quantum
        connection make a session (a newer one of the same kind replaces one still unpaired)."""

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            old = self._pending.pop(kind, None)
            if old is not None:
                old[1].close()
            self._pending[kind] = (reader, writer)
            if "classical" not in self._pending or "quantum" not in self._pending:
                return
            cr, cw = self._pending.pop("classical")
            qr, qw = self._pending.pop("quantum")
            if self.session is not None:
                self.session.close()
            async with self._session_lock:
                with contextlib.suppress(asyncio.CancelledError):  # the module is stopping
                    await self._new_session(self, cr, cw, qr, qw).run()

        return accept


@contextlib.contextmanager
def _held_port(host: str, port: int) -> Iterator[None]:
    """`port` bound and listening (so no other bind takes it, ``SO_REUSEADDR`` or not) until the
    block ends; then free for the real listener. Nothing held for port 0 or where the bind
    fails (the real listener then says why)."""
    if port == 0:
        yield
        return
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with contextlib.suppress(OSError):
            s.bind((host, port))
            s.listen(1)
        yield
    finally:
        s.close()
