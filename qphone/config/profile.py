"""A qphone profile: who this endpoint is, which KME serves it, who it calls.

```toml
[sae]
id = "alice"                                   # this SAE's ID = CN of client_cert
[kme]
url = "https://127.0.0.1:8441"                 # the local KME's ETSI GS QKD 014 base URL
ca_cert = "/abs/path/ca.pem"                   # CA that signed the KME's server certificate
client_cert = "/abs/path/alice.pem"            # this SAE's client certificate (PEM)
client_key = "/abs/path/alice.key"             # its private key (PEM, unencrypted)
[peer]
sae_id = "bob"                                 # the SAE at the other end of the calls
[identity]
file = "/abs/path/alice.identity"              # long-term signing identity (created if missing)
known_peers = "/abs/path/alice.known_peers.json"
[policy]                                       # optional; these are the defaults
min_otp_tag_bits = 64                          # answer OTP calls with tags of at least this
max_epoch_seconds = 60                         # answer AES calls whose epochs last at most this
max_epoch_frames = 3000                        # ... and hold at most this many frames
allow_pqc_only = false                         # answer calls without QKD key (PQC only)
max_overdue_epochs = 2                         # end a call when rotation is this many epochs late
```

Relative paths are relative to the profile file. ``qkd-keyserver demo`` writes one per SAE
(without ``[policy]``: the defaults apply).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

_SAE_ID = re.compile(r"[A-Za-z0-9._:@-]{1,128}")
_LAYOUT: dict[str, dict[str, str]] = {
    "sae": {"id": 'this SAE\'s ID, e.g. "alice"'},
    "kme": {
        "url": 'the KME\'s base URL, e.g. "https://127.0.0.1:8441"',
        "ca_cert": "path of the CA certificate (PEM) that signed the KME's certificate",
        "client_cert": "path of this SAE's client certificate (PEM)",
        "client_key": "path of this SAE's private key (PEM)",
    },
    "peer": {"sae_id": 'the peer SAE\'s ID, e.g. "bob"'},
    "identity": {
        "file": "path of this endpoint's identity file",
        "known_peers": "path of the known-peers JSON file",
    },
}


class ProfileError(ValueError):
    """The profile is invalid; the message names the file, the field and the fix."""


@dataclass(frozen=True)
class Policy:
    """What this endpoint accepts of a caller (``[policy]``) and how long it lets rotation lag.

    A call outside it is refused before any key is used, with a message naming the setting.
    The defaults are the core's (``ResponderPolicy``, ``CallSession``; a test keeps them equal).
    """

    min_otp_tag_bits: int = 64  # shorter Wegman-Carter tags are refused (32-bit: docs/crypto.md §6)
    max_epoch_seconds: float = 60.0  # AES: longest an epoch may last (rotate_ms, frames x 60 ms)
    max_epoch_frames: int = 3000  # AES: most frames an epoch may hold (rotate_frames)
    allow_pqc_only: bool = False  # answer calls without QKD key (--allow-pqc-only: one call)
    max_overdue_epochs: int = 2  # a call ends once rotation is this many epochs overdue


_POLICY_RULES: dict[str, tuple[type, tuple[float, float] | tuple[int, ...] | None, str]] = {
    "min_otp_tag_bits": (int, (32, 64, 128), "32, 64 or 128"),
    "max_epoch_seconds": (float, (0.02, 86_400.0), "a number of seconds from 0.02 to 86400"),
    "max_epoch_frames": (int, (1, 1 << 31), "an integer from 1 to 2^31"),
    "allow_pqc_only": (bool, None, "true or false"),
    "max_overdue_epochs": (int, (1, 1000), "an integer from 1 to 1000"),
}


def _policy_value(key: str, value: Any) -> Any:
    """The checked value of one [policy] setting, or None if it is not acceptable."""
    kind, allowed, _ = _POLICY_RULES[key]
    if kind is bool:
        return value if isinstance(value, bool) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if kind is int and not isinstance(value, int):
        return None
    assert allowed is not None
    if key == "min_otp_tag_bits":
        return value if value in allowed else None
    low, high = allowed
    return kind(value) if low <= value <= high else None


def _parse_policy(name: str, table: Any) -> Policy:
    if not isinstance(table, dict):
        raise ProfileError(f"{name}: [policy] must be a table of settings")
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in _POLICY_RULES:
            raise ProfileError(
                f"{name}: unknown key {key!r} in [policy]; allowed: {', '.join(_POLICY_RULES)}"
            )
        checked = _policy_value(key, value)
        if checked is None:
            raise ProfileError(
                f"{name}: [policy] {key} = {value!r}: set it to {_POLICY_RULES[key][2]}"
            )
        values[key] = checked
    return Policy(**values)


@dataclass(frozen=True)
class Profile:
    sae_id: str
    kme_url: str
    ca_cert: Path
    client_cert: Path
    client_key: Path
    peer_sae_id: str
    identity_file: Path
    known_peers: Path
    source: Path | None = None  # the file it was loaded from
    policy: Policy = field(default_factory=Policy)


def _check_sae_id(where: str, value: str) -> str:
    if not _SAE_ID.fullmatch(value):
        raise ProfileError(
            f"{where} = {value!r} is not a valid SAE ID: use 1-128 letters, digits or '._:@-'"
        )
    return value


def parse_profile(doc: dict[str, Any], base: Path, source: Path | None = None) -> Profile:
    """Validate a decoded profile document; `base` resolves relative paths."""
    name = str(source) if source else "profile"
    for section in doc:
        if section not in _LAYOUT and section != "policy":
            raise ProfileError(
                f"{name}: unknown section [{section}]; allowed: "
                + ", ".join(f"[{s}]" for s in [*_LAYOUT, "policy"])
            )
    policy = _parse_policy(name, doc.get("policy", {}))
    values: dict[str, dict[str, str]] = {}
    for section, keys in _LAYOUT.items():
        table = doc.get(section)
        if not isinstance(table, dict):
            raise ProfileError(f"{name}: section [{section}] is missing: add it")
        for key in table:
            if key not in keys:
                raise ProfileError(
                    f"{name}: unknown key {key!r} in [{section}]; allowed: {', '.join(keys)}"
                )
        values[section] = {}
        for key, what in keys.items():
            if key not in table:
                raise ProfileError(f"{name}: [{section}] {key} is missing: set it to {what}")
            v = table[key]
            if not isinstance(v, str) or not v.strip():
                raise ProfileError(f"{name}: [{section}] {key} must be a non-empty string: {what}")
            values[section][key] = v

    def path(section: str, key: str, must_exist: bool) -> Path:
        p = Path(values[section][key]).expanduser()
        p = p if p.is_absolute() else (base / p)
        if must_exist and not p.is_file():
            raise ProfileError(
                f"{name}: [{section}] {key} = {str(p)!r} does not exist: "
                f"fix the path ({_LAYOUT[section][key]})"
            )
        return p

    url = values["kme"]["url"].rstrip("/")
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ProfileError(
            f"{name}: [kme] url = {url!r} must be an https:// URL with a host "
            "(ETSI GS QKD 014 runs over HTTPS with mutual TLS)"
        )
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ProfileError(f"{name}: [kme] url = {url!r} has an invalid port") from None
    if parts.query or parts.fragment:
        raise ProfileError(f"{name}: [kme] url must not have a query or fragment")
    sae_id = _check_sae_id("[sae] id", values["sae"]["id"])
    peer = _check_sae_id("[peer] sae_id", values["peer"]["sae_id"])
    if peer == sae_id:
        raise ProfileError(f"{name}: [peer] sae_id is this SAE's own ID; set the peer's ID")
    return Profile(
        sae_id=sae_id,
        kme_url=url,
        ca_cert=path("kme", "ca_cert", True),
        client_cert=path("kme", "client_cert", True),
        client_key=path("kme", "client_key", True),
        peer_sae_id=peer,
        identity_file=path("identity", "file", False),
        known_peers=path("identity", "known_peers", False),
        source=source,
        policy=policy,
    )


def load_profile(path: str | Path) -> Profile:
    """Read and validate a profile TOML file; raises ProfileError naming the fix."""
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProfileError(
            f"profile {p} not found: run `qkd-keyserver demo --dir DIR` and use DIR/alice.toml, "
            "or write one (see qphone.config.profile, or README: profiles)"
        ) from None
    except OSError as e:
        raise ProfileError(f"cannot read profile {p}: {e.strerror}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{p} is not valid TOML: {e}") from None
    return parse_profile(doc, p.resolve().parent, source=p)
