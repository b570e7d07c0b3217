"""``qkd-keyserver demo``: PKI, two KME processes on a simulated BB84 link, profiles for qphone."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keyserver.pki.certificates import CertPaths, DemoPki, ensure_demo_pki
from keyserver.pki.tls import client_context


@dataclass(frozen=True)
class DemoOptions:
    directory: Path
    port_a: int = 8441
    port_b: int = 8442
    distance_km: float = 10.0
    eve_fraction: float = 0.0
    seed: int | None = None
    max_key_count: int = 100_000
    host: str = "127.0.0.1"


def _toml_str(v: Any) -> str:
    return json.dumps(str(v))  # a JSON string is a valid TOML basic string


def kme_config_text(
    opts: DemoOptions, pki: DemoPki, site: str, *, port: int, peer_port: int
) -> str:
    me, peer = ("A", "B") if site == "A" else ("B", "A")
    certs = pki.kme_a if site == "A" else pki.kme_b
    local, remote = ("alice", "bob") if site == "A" else ("bob", "alice")
    lines = [
        "[kme]",
        f'id = "KME-{me}"',
        f"host = {_toml_str(opts.host)}",
        f"port = {port}",
        f"data_dir = {_toml_str(opts.directory / f'kme-{me.lower()}-data')}",
        "",
        "[tls]",
        f"ca_cert = {_toml_str(pki.ca)}",
        f"cert = {_toml_str(certs.cert)}",
        f"key = {_toml_str(certs.key)}",
        "",
        "[keys]",
        "key_size = 256",
        "min_key_size = 64",
        "max_key_size = 65536",
        "max_key_per_request = 128",
        f"max_key_count = {opts.max_key_count}",
        "",
        "[sae]",
        f'local = ["{local}"]',
        "",
        "[peer]",
        f'id = "KME-{peer}"',
        f'url = "https://{opts.host}:{peer_port}"',
        f'sae = ["{remote}"]',
        "",
        "[link]",
        f'role = "{"source" if site == "A" else "sink"}"',
        f"distance_km = {float(opts.distance_km)}",
        f"eve_fraction = {float(opts.eve_fraction)}",
    ]
    if opts.seed is not None:
        lines.append(f"seed = {int(opts.seed)}")
    return "\n".join(lines) + "\n"


def profile_text(
    opts: DemoOptions, pki: DemoPki, sae: str, certs: CertPaths, url: str, peer: str
) -> str:
    d = opts.directory
    return "\n".join(
        [
            "[sae]",
            f"id = {_toml_str(sae)}",
            "",
            "[kme]",
            f"url = {_toml_str(url)}",
            f"ca_cert = {_toml_str(pki.ca)}",
            f"client_cert = {_toml_str(certs.cert)}",
            f"client_key = {_toml_str(certs.key)}",
            "",
            "[peer]",
            f"sae_id = {_toml_str(peer)}",
            "",
            "[identity]",
            f"file = {_toml_str(d / f'{sae}.identity')}",
            f"known_peers = {_toml_str(d / f'{sae}.known_peers.json')}",
            "",
        ]
    )


def _url(opts: DemoOptions, port: int) -> str:
    return f"https://{opts.host}:{port}"


def _answers(url: str, ctx: ssl.SSLContext, slave: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/v1/keys/{slave}/status", context=ctx, timeout=2):
            return True
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


class Demo:
    """Runs the two KME child processes until stopped."""

    def __init__(self, opts: DemoOptions) -> None:
        self.opts = opts
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self._stop = threading.Event()

    def prepare(self) -> DemoPki:
        d = self.opts.directory
        d.mkdir(parents=True, exist_ok=True)
        pki = ensure_demo_pki(d)
        o = self.opts
        (d / "kme-a.toml").write_text(
            kme_config_text(o, pki, "A", port=o.port_a, peer_port=o.port_b)
        )
        (d / "kme-b.toml").write_text(
            kme_config_text(o, pki, "B", port=o.port_b, peer_port=o.port_a)
        )
        return pki

    def start_children(self) -> None:
        d = self.opts.directory
        for site in ("a", "b"):
            log = open(d / f"kme-{site}.log", "ab")  # noqa: SIM115 - owned by the child
            self.children[site] = subprocess.Popen(
                [sys.executable, "-m", "keyserver.cli", "serve", "--config",
                 str(d / f"kme-{site}.toml")],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL,
            )
            log.close()

    def wait_ready(self, pki: DemoPki, timeout: float = 60.0) -> None:
        o = self.opts
        ctx_a = client_context(pki.ca, pki.alice.cert, pki.alice.key)
        ctx_b = client_context(pki.ca, pki.bob.cert, pki.bob.key)
        deadline = time.monotonic() + timeout
        while True:
            for site, p in self.children.items():
                if p.poll() is not None:
                    raise RuntimeError(
                        f"KME {site.upper()} exited with code {p.returncode}; see "
                        f"{o.directory / f'kme-{site}.log'}"
                    )
            if _answers(_url(o, o.port_a), ctx_a, "bob") and _answers(
                _url(o, o.port_b), ctx_b, "alice"
            ):
                return
            if time.monotonic() > deadline or self._stop.is_set():
                raise RuntimeError("the KMEs did not answer in time; see kme-a.log / kme-b.log")
            time.sleep(0.2)

    def write_outputs(self, pki: DemoPki) -> Path:
        o, d = self.opts, self.opts.directory
        url_a, url_b = _url(o, o.port_a), _url(o, o.port_b)
        (d / "alice.toml").write_text(profile_text(o, pki, "alice", pki.alice, url_a, "bob"))
        (d / "bob.toml").write_text(profile_text(o, pki, "bob", pki.bob, url_b, "alice"))
        info = {
            "ca_cert": str(pki.ca),
            "kmes": {
                "A": {"id": "KME-A", "url": url_a, "config": str(d / "kme-a.toml"),
                      "log": str(d / "kme-a.log"), "pid": self.children["a"].pid},
                "B": {"id": "KME-B", "url": url_b, "config": str(d / "kme-b.toml"),
                      "log": str(d / "kme-b.log"), "pid": self.children["b"].pid},
            },
            "saes": {
                "alice": {"id": "alice", "kme": "KME-A", "kme_url": url_a,
                          "cert": str(pki.alice.cert), "key": str(pki.alice.key),
                          "ca_cert": str(pki.ca), "profile": str(d / "alice.toml"),
                          "peer": "bob"},
                "bob": {"id": "bob", "kme": "KME-B", "kme_url": url_b,
                        "cert": str(pki.bob.cert), "key": str(pki.bob.key),
                        "ca_cert": str(pki.ca), "profile": str(d / "bob.toml"),
                        "peer": "alice"},
            },
            "link": {"distance_km": o.distance_km, "eve_fraction": o.eve_fraction,
                     "seed": o.seed},
        }
        tmp = d / "demo.json.tmp"
        tmp.write_text(json.dumps(info, indent=2) + "\n")
        os.replace(tmp, d / "demo.json")
        return d / "demo.json"

    def stop_children(self) -> None:
        for p in self.children.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.children.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def run(self) -> int:
        """Foreground: start, announce, wait for SIGINT/SIGTERM or a child's death, stop."""

        def on_signal(signum: int, frame: object) -> None:
            self._stop.set()

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        demo_json = self.opts.directory / "demo.json"
        demo_json.unlink(missing_ok=True)
        try:
            pki = self.prepare()
            self.start_children()
            self.wait_ready(pki)
            path = self.write_outputs(pki)
            print(json.dumps({"event": "demo_ready", "demo_json": str(path),
                              "kme_a": _url(self.opts, self.opts.port_a),
                              "kme_b": _url(self.opts, self.opts.port_b)}), flush=True)
            while not self._stop.wait(0.5):
                for site, p in self.children.items():
                    if p.poll() is not None:
                        print(json.dumps({"event": "kme_exited", "site": site.upper(),
                                          "code": p.returncode}), file=sys.stderr, flush=True)
                        return 1
            return 0
        except RuntimeError as e:
            print(f"qkd-keyserver demo: {e}", file=sys.stderr)
            return 1
        finally:
            self.stop_children()
            demo_json.unlink(missing_ok=True)
            for s, h in old.items():
                signal.signal(s, h)
