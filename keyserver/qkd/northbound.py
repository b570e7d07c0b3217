"""The module's northbound ETSI GS QKD 014 API: a KeyService for :mod:`keyserver.etsi014.server`.

Only the local KMS node (``[northbound] local_node``, the CN of its client certificate) may call
it. The transmitter serves ``status`` and ``enc_keys`` for slave ``remote_node`` (keys it returns
are stored at the receiver already: it stores a block only after the receiver confirmed it);
the receiver serves ``dec_keys`` by key ID (all or none) with master ``remote_node``, and
``status``. A delivered key leaves the store. ``POST /admin/v1/eve`` (admin CN only, on the
transmitter, which hosts the simulated fibre) sets the intercept-resend fraction.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web

from keyserver.etsi014 import messages as etsi014
from keyserver.etsi014.key import Key
from keyserver.etsi014.messages import EtsiError, KeyRequest, Limits, Status
from keyserver.etsi014.server import Etsi014Api, caller_id, guarded_app, json_response
from keyserver.etsi014.statuswatch import StatusWatch
from keyserver.qkd.config import ModuleConfig
from keyserver.qkd.role import Role
from keyserver.qkd.store import ModuleStore

MSG_OUT_OF_KEYS = "not enough key material available on the QKD module; retry later"


class ModuleKeyService:
    """ETSI 014 key service of one QKD module (no HTTP inside)."""

    def __init__(
        self,
        config: ModuleConfig,
        store: ModuleStore,
        status_extension: Callable[[], dict[str, Any]],
        on_delivered: Callable[[], None],
    ) -> None:
        self._config = config
        self._role = Role(config.role)
        self._store = store
        self._extension = status_extension
        self._on_delivered = on_delivered
        nb = config.northbound
        self._limits = Limits(
            key_size=nb.key_size,
            min_key_size=nb.key_size,
            max_key_size=nb.key_size,
            max_key_per_request=nb.max_key_per_request,
            max_sae_id_count=0,
        )

    @property
    def kme_id(self) -> str:
        return self._config.id

    @property
    def limits(self) -> Limits:
        return self._limits

    def authorise(self, caller: str | None) -> str:
        if caller is None or caller != self._config.northbound.local_node:
            raise EtsiError(401, "only the local KMS node may use this QKD module's key API")
        return caller

    def _check_peer(self, sae: str) -> None:
        if sae != self._config.northbound.remote_node:
            raise etsi014.bad_request(
                f"this QKD module serves keys shared with {self._config.northbound.remote_node} "
                "only",
                parameter="SAE_ID",
            )

    async def status(self, master: str, slave: str) -> Status:
        self._check_peer(slave)
        nb = self._config.northbound
        return Status(
            source_kme_id=self._config.id,
            target_kme_id=f"QKD-{self._config.link}-peer",
            master_sae_id=nb.local_node if self._role is Role.TRANSMITTER else nb.remote_node,
            slave_sae_id=nb.remote_node if self._role is Role.TRANSMITTER else nb.local_node,
            stored_key_count=self._store.key_count(),
            max_key_count=nb.max_key_count,
            limits=self._limits,
            status_extension={"qkd_link": self._extension()},
        )

    async def enc_keys(self, master: str, slave: str, request: KeyRequest) -> Sequence[Key]:
        if self._role is not Role.TRANSMITTER:
            raise etsi014.bad_request(
                "this is the receiver module: call dec_keys here; enc_keys is served by the "
                "transmitter module"
            )
        self._check_peer(slave)
        keys = self._store.take_keys(request.number)
        if not keys:
            raise EtsiError(503, MSG_OUT_OF_KEYS, [{"reason": "out_of_keys"}])
        self._on_delivered()
        return [Key.of(kid, material) for kid, material in keys]

    async def dec_keys(
        self, slave: str, master: str, key_ids: Sequence[uuid.UUID]
    ) -> Sequence[Key]:
        if self._role is not Role.RECEIVER:
            raise etsi014.bad_request(
                "this is the transmitter module: call enc_keys here; dec_keys is served by the "
                "receiver module"
            )
        self._check_peer(master)
        keys = self._store.get_keys(list(key_ids))
        if keys is None:
            raise etsi014.bad_request(etsi014.MSG_NOT_FOUND)
        self._on_delivered()
        return [Key.of(kid, material) for kid, material in keys]


def build_app(
    service: ModuleKeyService,
    config: ModuleConfig,
    set_eve: Callable[[float], float] | None,
    watch: StatusWatch | None = None,
) -> tuple[web.Application, Etsi014Api]:
    api = Etsi014Api(service, watch=watch)
    app = guarded_app(api, client_max_size=etsi014.MAX_BODY_BYTES)

    async def h_eve(request: web.Request) -> web.Response:
        if caller_id(request) != config.northbound.admin:
            raise EtsiError(401, "only the network admin certificate may use /admin")
        if set_eve is None:
            raise etsi014.bad_request(
                "the eavesdropper sits on the simulated fibre at the transmitter module: send "
                "this to the transmitter"
            )
        obj = etsi014.parse_json_object(await request.read(), 1024)  # bounded, strict
        if set(obj) != {"fraction"}:
            raise etsi014.bad_request('body must be {"fraction": 0.0..1.0}')
        value = obj["fraction"]
        # compared before any float(): a huge integer is refused, not an overflow (500)
        if isinstance(value, bool) or not isinstance(value, int | float) or not (0 <= value <= 1):
            raise etsi014.bad_request("fraction must be a number within 0..1")
        return json_response(200, {"eve_fraction": set_eve(float(value))})

    app.router.add_post("/admin/v1/eve", h_eve)
    return app, api
