"""Profile files for the tests, written field by field (a field set to "<omit>" is left out)."""

from __future__ import annotations

from pathlib import Path

from tests.support.kme_fixtures import KmePki


def write_profile(path: Path, pki: KmePki, **over: str) -> Path:
    fields = {
        "sae.id": "alice",
        "kme.url": "https://127.0.0.1:8441",
        "kme.ca_cert": str(pki.demo.ca),
        "kme.client_cert": str(pki.demo.alice.cert),
        "kme.client_key": str(pki.demo.alice.key),
        "peer.sae_id": "bob",
        "identity.file": "alice.identity",
        "identity.known_peers": "alice.known_peers.json",
    }
    fields.update(over)
    sections: dict[str, list[str]] = {}
    for k, v in fields.items():
        if v == "<omit>":
            continue
        s, name = k.split(".")
        sections.setdefault(s, []).append(f'{name} = "{v}"')
    path.write_text("".join(f"[{s}]\n" + "\n".join(lines) + "\n" for s, lines in sections.items()))
    return path
