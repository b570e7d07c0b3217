"""KME configuration: a TOML file (``qkd-keyserver serve --config FILE``), strictly validated.

```toml
[kme]
id = "KME-A"                  # this KME's ID (= CN of its certificate)
host = "127.0.0.1"
port = 8441
data_dir = "/var/lib/qkd/kme-a"
synchronous = "NORMAL"        # or "FULL" (fsync every transaction: survives power loss)

[tls]
ca_cert = "/etc/qkd/ca.pem"   # CA that signs SAE and KME certificates
cert = "/etc/qkd/kme-a.pem"
key = "/etc/qkd/kme-a.key"

[keys]                        # sizes in bits
key_size = 256
min_key_size = 64
max_key_size = 65536
max_key_per_request = 128
max_key_count = 100000        # pool cap, in keys of key_size

[sae]
local = ["alice"]             # SAE IDs (certificate CNs) served here as masters/slaves

[peer]
id = "KME-B"
url = "https://127.0.0.1:8442"
sae = ["bob"]                 # SAEs at the peer KME

[link]
role = "source"               # "source" runs the simulated BB84 link; "sink" receives from it
distance_km = 10.0
eve_fraction = 0.0
seed = 1                      # optional: reproducible simulation
pulses_per_block = 100000000   # 0.1 s of link time at 1 GHz

[http]                        # optional: ETSI 014 listener limits (seconds; defaults shown)
tls_handshake_timeout = 10
header_timeout = 10           # first byte of a request -> complete header
body_timeout = 10
idle_timeout = 30             # keep-alive
max_connections = 1024
max_connections_per_client = 64   # per client certificate CN (or address without one)
```
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from keyserver.etsi014.messages import Limits, valid_sae_id
from keyserver.etsi014.server import HttpLimits


class ConfigError(ValueError):
    """The configuration file is wrong; the message says where and how to fix it."""


@dataclass(frozen=True)
class TlsConfig:
    ca_cert: Path
    cert: Path
    key: Path


@dataclass(frozen=True)
class PeerConfig:
    id: str
    url: str
    sae: tuple[str, ...]


@dataclass(frozen=True)
class LinkConfig:
    role: Literal["source", "sink"]
    distance_km: float = 10.0
    eve_fraction: float = 0.0
    seed: int | None = None
    pulses_per_block: int = 100_000_000
    params: dict[str, float | int | str] = field(default_factory=dict)  # more LinkParams fields


@dataclass(frozen=True)
class KmeConfig:
    id: str
    host: str
    port: int
    data_dir: Path
    tls: TlsConfig
    limits: Limits
    max_key_count: int
    local_sae: tuple[str, ...]
    peer: PeerConfig
    link: LinkConfig
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    http: HttpLimits = field(default_factory=HttpLimits)


_SECTIONS = {
    "kme": {"id", "host", "port", "data_dir", "synchronous"},
    "tls": {"ca_cert", "cert", "key"},
    "keys": {"key_size", "min_key_size", "max_key_size", "max_key_per_request", "max_key_count"},
    "sae": {"local"},
    "peer": {"id", "url", "sae"},
    "link": {"role", "distance_km", "eve_fraction", "seed", "pulses_per_block", "params"},
    "http": {
        "tls_handshake_timeout", "header_timeout", "body_timeout", "idle_timeout",
        "max_connections", "max_connections_per_client",
    },
}


def _get(
    doc: dict[str, Any], section: str, name: str, kind: type | tuple[type, ...], default: Any = ...
) -> Any:
    sec = doc.get(section, {})
    if name not in sec:
        if default is ...:
            raise ConfigError(f"[{section}] {name} is missing: add it to the config file")
        return default
    value = sec[name]
    if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
        raise ConfigError(f"[{section}] {name} = {value!r} has the wrong type")
    return value


def _sae_list(doc: dict[str, Any], section: str, name: str) -> tuple[str, ...]:
    value = _get(doc, section, name, list)
    if not value or not all(isinstance(v, str) and valid_sae_id(v) for v in value):
        raise ConfigError(
            f"[{section}] {name} must be a non-empty list of SAE IDs "
            "(letters, digits, '._:@-', at most 128 characters)"
        )
    return tuple(value)


def parse_config(doc: dict[str, Any], base: Path) -> KmeConfig:
    """Validate a decoded TOML document; relative paths are relative to `base`."""
    for section, value in doc.items():
        if section not in _SECTIONS:
            raise ConfigError(f"unknown section [{section}]; expected one of {sorted(_SECTIONS)}")
        if not isinstance(value, dict):
            raise ConfigError(f"[{section}] must be a table")
        unknown = sorted(set(value) - _SECTIONS[section])
        if unknown:
            raise ConfigError(f"[{section}] has unknown key {unknown[0]!r}")

    def path(section: str, name: str) -> Path:
        p = Path(_get(doc, section, name, str)).expanduser()
        return p if p.is_absolute() else (base / p).resolve()

    kme_id = _get(doc, "kme", "id", str)
    port = _get(doc, "kme", "port", int)
    if not 0 <= port <= 65535:
        raise ConfigError(f"[kme] port = {port} is not a TCP port")
    sync = _get(doc, "kme", "synchronous", str, "NORMAL").upper()
    if sync not in ("NORMAL", "FULL"):
        raise ConfigError('[kme] synchronous must be "NORMAL" or "FULL"')
    tls = TlsConfig(path("tls", "ca_cert"), path("tls", "cert"), path("tls", "key"))
    for name in ("ca_cert", "cert", "key"):
        p = getattr(tls, name)
        if not p.is_file():
            raise ConfigError(f"[tls] {name} = {str(p)!r} does not exist: fix the path")
    try:
        limits = Limits(
            key_size=_get(doc, "keys", "key_size", int, 256),
            min_key_size=_get(doc, "keys", "min_key_size", int, 64),
            max_key_size=_get(doc, "keys", "max_key_size", int, 65536),
            max_key_per_request=_get(doc, "keys", "max_key_per_request", int, 128),
        )
    except ValueError as e:
        raise ConfigError(f"[keys] {e}") from None
    max_key_count = _get(doc, "keys", "max_key_count", int, 100_000)
    if max_key_count < 1:
        raise ConfigError("[keys] max_key_count must be >= 1")
    local = _sae_list(doc, "sae", "local")
    peer = PeerConfig(
        _get(doc, "peer", "id", str), _get(doc, "peer", "url", str), _sae_list(doc, "peer", "sae")
    )
    if not peer.url.startswith("https://"):
        raise ConfigError("[peer] url must start with https://")
    names = [kme_id, peer.id, *local, *peer.sae]
    if len(set(names)) != len(names):
        raise ConfigError("KME IDs and SAE IDs must all be distinct (they are certificate CNs)")
    role = _get(doc, "link", "role", str)
    if role not in ("source", "sink"):
        raise ConfigError('[link] role must be "source" (runs the simulator) or "sink"')
    params = _get(doc, "link", "params", dict, {})
    for k, v in params.items():
        if isinstance(v, bool) or not isinstance(v, int | float | str):
            raise ConfigError(f"[link.params] {k} must be a number or a string")
    seed = _get(doc, "link", "seed", int, None)
    link = LinkConfig(
        role=role,
        distance_km=float(_get(doc, "link", "distance_km", (int, float), 10.0)),
        eve_fraction=float(_get(doc, "link", "eve_fraction", (int, float), 0.0)),
        seed=seed,
        pulses_per_block=_get(doc, "link", "pulses_per_block", int, 100_000_000),
        params=dict(params),
    )
    if not 0.0 <= link.eve_fraction <= 1.0:
        raise ConfigError("[link] eve_fraction must be within 0..1")
    if link.distance_km < 0:
        raise ConfigError("[link] distance_km must be >= 0")
    if link.pulses_per_block < 10_000:
        raise ConfigError("[link] pulses_per_block must be >= 10000")
    if role == "source":
        from keyserver.qkd.physics import LinkParams

        extra: dict[str, Any] = dict(link.params)
        try:
            LinkParams(distance_km=link.distance_km, eve_fraction=link.eve_fraction, **extra)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"[link] / [link.params]: {e}") from None
    defaults = HttpLimits()
    try:
        http = HttpLimits(
            **{
                name: _get(doc, "http", name, int if name.startswith("max_") else (int, float),
                           getattr(defaults, name))
                for name in _SECTIONS["http"]
            }
        )
    except ValueError as e:
        raise ConfigError(f"[http] {e}") from None
    return KmeConfig(
        id=kme_id,
        host=_get(doc, "kme", "host", str, "127.0.0.1"),
        port=port,
        data_dir=path("kme", "data_dir"),
        tls=tls,
        limits=limits,
        max_key_count=max_key_count,
        local_sae=local,
        peer=peer,
        link=link,
        synchronous=sync,
        http=http,
    )


def load_config(file: Path) -> KmeConfig:
    try:
        doc = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read config {file}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{file} is not valid TOML: {e}") from None
    return parse_config(doc, file.resolve().parent)
