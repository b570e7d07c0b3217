"""The QKD module's config file (TOML), strictly validated (format: docs/bb84.md, docs/network.md).

Unknown keys are refused; relative paths are relative to the file. Every problem is one
:class:`keyserver.configfile.ConfigError` line that names the key and the fix.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from keyserver.configfile import ConfigError as ConfigError  # the package's one (re-exported)
from keyserver.configfile import load_toml
from keyserver.etsi014.messages import valid_sae_id
from keyserver.qkd.physics import LinkParams

ROLES = ("transmitter", "receiver")


class Fidelity(enum.StrEnum):
    """How a link is simulated (docs/network.md, "Link fidelity")."""

    PHYSICS = "physics"  # per-pulse decoy-BB84 simulation with the full post-processing
    EMULATED = "emulated"  # blocks sampled from the closed-form model (keyserver.qkd.emulation)


@dataclass(frozen=True)
class NorthboundConfig:
    host: str
    port: int
    ca_cert: Path
    cert: Path
    key: Path
    local_node: str
    remote_node: str
    admin: str
    key_size: int
    max_key_count: int
    max_key_per_request: int


@dataclass(frozen=True)
class ModuleConfig:
    id: str
    link: str
    role: str
    data_dir: Path
    testing: bool
    seed: int | None
    northbound: NorthboundConfig
    quantum_host: str
    quantum_port: int
    classical_host: str
    classical_port: int
    initial_auth_key: Path
    params: LinkParams
    channel_key: Path
    fidelity: Fidelity = Fidelity.PHYSICS
    log_level: str = "info"
    # SQLite ``synchronous`` of the module's store: an emulated module's default is OFF (its
    # store survives a process kill, as a node's does; hundreds of emulated modules fsyncing
    # every block saturate a disk: docs/network.md, "Start-up at 167 sites"), a physics one NORMAL
    synchronous: str = "NORMAL"
    # where the transmitter keeps its link plans, shared by a network's modules
    # (keyserver.qkd.plancache; None: computed every start)
    plan_cache: Path | None = None

    @property
    def seeded(self) -> bool:
        return self.seed is not None


_SECTIONS = {
    "module": {
        "id",
        "link",
        "role",
        "data_dir",
        "testing",
        "seed",
        "log_level",
        "fidelity",
        "synchronous",
        "plan_cache",
    },
    "northbound": {
        "host",
        "port",
        "ca_cert",
        "cert",
        "key",
        "local_node",
        "remote_node",
        "admin",
        "key_size",
        "max_key_count",
        "max_key_per_request",
    },
    "quantum_channel": {"address", "distance_km", "eve_fraction", "params", "channel_key"},
    "classical_channel": {"address", "initial_auth_key"},
}


def _get(doc: dict[str, Any], section: str, name: str, kind: Any, default: Any = ...) -> Any:
    table = doc.get(section, {})
    if name not in table:
        if default is ...:
            raise ConfigError(f"[{section}] {name} is required")
        return default
    value = table[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise ConfigError(f"[{section}] {name} must be {kinds[0].__name__}, not a boolean")
    if not isinstance(value, kinds):
        raise ConfigError(f"[{section}] {name} must be {kinds[0].__name__}")
    return value


def _address(doc: dict[str, Any], section: str) -> tuple[str, int]:
    text = _get(doc, section, "address", str)
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f'[{section}] address must be "host:port", e.g. "127.0.0.1:9101"')
    return host.strip("[]"), int(port)


def _params(doc: dict[str, Any]) -> LinkParams:
    qc = doc.get("quantum_channel", {})
    extra = qc.get("params", {})
    if not isinstance(extra, dict):
        raise ConfigError("[quantum_channel.params] must be a table")
    names = {f.name: f for f in fields(LinkParams)}
    values: dict[str, Any] = {}
    for k, v in extra.items():
        if k not in names or k in ("distance_km", "eve_fraction"):
            hint = (
                "set it in [quantum_channel]"
                if k in ("distance_km", "eve_fraction")
                else ("see docs/bb84.md for the parameters")
            )
            raise ConfigError(f"[quantum_channel.params] unknown parameter {k!r}: {hint}")
        default = getattr(LinkParams(), k)
        if isinstance(default, bool):
            if not isinstance(v, bool):
                raise ConfigError(f"[quantum_channel.params] {k} must be true or false")
        elif isinstance(default, int):
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"[quantum_channel.params] {k} must be an integer")
        elif isinstance(default, float):
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise ConfigError(f"[quantum_channel.params] {k} must be a number")
            v = float(v)
        elif not isinstance(v, str):
            raise ConfigError(f"[quantum_channel.params] {k} must be a string")
        values[k] = v
    distance = _get(doc, "quantum_channel", "distance_km", (int, float))
    eve = _get(doc, "quantum_channel", "eve_fraction", (int, float), 0.0)
    try:
        return LinkParams(distance_km=float(distance), eve_fraction=float(eve), **values)
    except ValueError as e:
        raise ConfigError(f"[quantum_channel] / [quantum_channel.params]: {e}") from None


def parse_config(doc: dict[str, Any], base: Path) -> ModuleConfig:
    for section, table in doc.items():
        if section not in _SECTIONS:
            raise ConfigError(f"unknown section [{section}]: allowed {', '.join(_SECTIONS)}")
        if not isinstance(table, dict):
            raise ConfigError(f"[{section}] must be a table")
        for k in table:
            if k not in _SECTIONS[section]:
                raise ConfigError(f"[{section}] unknown key {k!r}")
    for section in ("module", "northbound", "quantum_channel", "classical_channel"):
        if section not in doc:
            raise ConfigError(f"section [{section}] is missing")

    def path(section: str, name: str) -> Path:
        p = Path(_get(doc, section, name, str))
        return p if p.is_absolute() else (base / p)

    module_id = _get(doc, "module", "id", str)
    link = _get(doc, "module", "link", str)
    for name, value in (("id", module_id), ("link", link)):
        if not valid_sae_id(value):
            raise ConfigError(f"[module] {name} must be 1-128 of A-Z a-z 0-9 . _ : @ -")
    role = _get(doc, "module", "role", str)
    if role not in ROLES:
        raise ConfigError('[module] role must be "transmitter" or "receiver"')
    testing = _get(doc, "module", "testing", bool, False)
    seed = _get(doc, "module", "seed", int, None)
    if seed is not None and not testing:
        raise ConfigError(
            "[module] seed makes the key reproducible (not secret): remove it, or set "
            "testing = true (tests and benchmarks only)"
        )
    fidelity_text = _get(doc, "module", "fidelity", str, Fidelity.PHYSICS.value)
    try:
        fidelity = Fidelity(fidelity_text)
    except ValueError:
        raise ConfigError('[module] fidelity must be "physics" or "emulated"') from None
    default_sync = "OFF" if fidelity is Fidelity.EMULATED else "NORMAL"
    synchronous = _get(doc, "module", "synchronous", str, default_sync).upper()
    if synchronous not in ("OFF", "NORMAL", "FULL"):
        raise ConfigError('[module] synchronous must be "OFF", "NORMAL" or "FULL"')
    log_level = _get(doc, "module", "log_level", str, "info")
    if log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError("[module] log_level must be debug, info, warning or error")
    nb_names = {}
    for name in ("local_node", "remote_node", "admin"):
        v = _get(doc, "northbound", name, str)
        if not valid_sae_id(v):
            raise ConfigError(f"[northbound] {name} must be 1-128 of A-Z a-z 0-9 . _ : @ -")
        nb_names[name] = v
    key_size = _get(doc, "northbound", "key_size", int, 256)
    if key_size % 8 or not 64 <= key_size <= 65536:
        raise ConfigError("[northbound] key_size must be a multiple of 8 within 64..65536")
    max_key_count = _get(doc, "northbound", "max_key_count", int, 4096)
    if not 1 <= max_key_count <= 10_000_000:
        raise ConfigError("[northbound] max_key_count must be within 1..10000000")
    per_request = _get(doc, "northbound", "max_key_per_request", int, 128)
    if not 1 <= per_request <= 100_000:
        raise ConfigError("[northbound] max_key_per_request must be within 1..100000")
    port = _get(doc, "northbound", "port", int)
    if not 0 <= port <= 65535:
        raise ConfigError("[northbound] port must be within 0..65535")
    northbound = NorthboundConfig(
        host=_get(doc, "northbound", "host", str, "127.0.0.1"),
        port=port,
        ca_cert=path("northbound", "ca_cert"),
        cert=path("northbound", "cert"),
        key=path("northbound", "key"),
        local_node=nb_names["local_node"],
        remote_node=nb_names["remote_node"],
        admin=nb_names["admin"],
        key_size=key_size,
        max_key_count=max_key_count,
        max_key_per_request=per_request,
    )
    if "channel_key" not in doc["quantum_channel"]:
        raise ConfigError(
            "[quantum_channel] channel_key is required: the file of 32 random bytes (mode 0600) "
            "that seals the link's quantum channel, the same for both modules "
            "(e.g. head -c 32 /dev/urandom > link.channelkey)"
        )
    qhost, qport = _address(doc, "quantum_channel")
    chost, cport = _address(doc, "classical_channel")
    return ModuleConfig(
        id=module_id,
        link=link,
        role=role,
        data_dir=path("module", "data_dir"),
        testing=testing,
        seed=seed,
        northbound=northbound,
        quantum_host=qhost,
        quantum_port=qport,
        classical_host=chost,
        classical_port=cport,
        initial_auth_key=path("classical_channel", "initial_auth_key"),
        params=_params(doc),
        channel_key=path("quantum_channel", "channel_key"),
        fidelity=fidelity,
        log_level=log_level,
        synchronous=synchronous,
        plan_cache=path("module", "plan_cache") if "plan_cache" in doc["module"] else None,
    )


def load_config(file: Path) -> ModuleConfig:
    doc = load_toml(file)
    return parse_config(doc, file.resolve().parent)


def module_config_files(file: Path) -> list[Path]:
    """``[file]``, or the module configs a *site host file* names: a TOML file with only
    ``[site_host] modules = ["a.toml", ...]`` (relative to the file), which
    ``qkd-keyserver module --config`` runs in one process (docs/network.md, "Lean processes")."""
    doc = load_toml(file)
    if "site_host" not in doc:
        return [file]
    host = doc["site_host"]
    names = host.get("modules") if isinstance(host, dict) else None
    if (
        set(doc) != {"site_host"}
        or not isinstance(host, dict)
        or set(host) != {"modules"}
        or not isinstance(names, list)
        or not names
        or not all(isinstance(n, str) for n in names)
    ):
        raise ConfigError(
            f'{file}: a site host file has only [site_host] modules = ["module.toml", ...]'
        )
    base = file.resolve().parent
    return [Path(n) if Path(n).is_absolute() else base / n for n in names]


def with_port(config: ModuleConfig, **changes: Any) -> ModuleConfig:
    return dataclasses.replace(config, **changes)
