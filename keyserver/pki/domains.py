"""The three trust domains of a QKD network, each with its own CA.

* **SAE domain** (``pki/sae-ca``): SAE client certificates (CN = SAE ID) and each node's server
  certificate for its ETSI 014 SAE API. An SAE certificate is worth nothing anywhere else.
* **Node domain** (``pki/node-ca``): one certificate per KMS node (CN = node ID, client and
  server), used only on the node-to-node listener (sync, link-state, relay), plus the
  ``network-admin`` client certificate that may read a node's state.
* **Module domain** (``pki/module-ca``): each QKD module's server certificate (CN = module ID),
  each node's client certificate towards its modules (CN = node ID), and the ``network-admin``
  client certificate allowed on the modules' ``/admin`` endpoint.

Each listener trusts exactly one CA, and every peer identity is pinned by CN on both sides, so
no certificate of one domain can speak in another whatever its name. :class:`NetworkPki`
creates all of it for a topology (idempotently: an existing PKI is reused, missing certificates
are added) and the pre-shared initial authentication key of every QKD link (0600).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from keyserver.pki.certificates import LOCAL_NAMES, CertificateAuthority, CertPaths

ADMIN_CN = "network-admin"
AUTH_KEY_BYTES = 256 * 1024  # pre-shared initial authentication key per link (2 Mbit)

DOMAINS = ("sae", "node", "module")


def _ca(root: Path, domain: str) -> CertificateAuthority:
    d = root / f"{domain}-ca"
    if (d / "ca.pem").exists() and (d / "ca.key").exists():
        return CertificateAuthority.load(d)
    return CertificateAuthority.create(d, name=f"qphone QKD network {domain} CA")


def _cert(
    ca: CertificateAuthority,
    folder: Path,
    stem: str,
    cn: str,
    *,
    server: bool,
    client: bool,
    extra_names: tuple[str, ...] = (),
) -> CertPaths:
    """The certificate `stem` (issued if missing, or reissued when a server certificate lacks
    one of `extra_names`, e.g. a site address of a network started in namespaces)."""
    paths = CertPaths(folder / f"{stem}.pem", folder / f"{stem}.key")
    names = (*LOCAL_NAMES, *extra_names) if server else ()
    if (
        paths.cert.exists()
        and paths.key.exists()
        and (not extra_names or set(extra_names) <= _san(paths.cert))
    ):
        return paths
    return ca.issue(folder, stem, cn, server_names=names, client=client)


def _san(cert: Path) -> set[str]:
    """The subject alternative names of a certificate, as text (empty if it has none)."""
    c = x509.load_pem_x509_certificate(cert.read_bytes())
    try:
        ext = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(v) for v in ext.get_values_for_type(x509.IPAddress)} | set(
        ext.get_values_for_type(x509.DNSName)
    )


@dataclass(frozen=True)
class NodeCredentials:
    """Everything one KMS node presents or trusts."""

    sae_ca: Path
    sae_server: CertPaths  # SAE API server certificate (SAE domain), CN = node ID
    node_ca: Path
    node: CertPaths  # node-to-node certificate (node domain), CN = node ID
    module_ca: Path
    module_client: CertPaths  # client certificate towards its modules (module domain)


class NetworkPki:
    """The CAs and certificates of one network in ``root`` (``DIR/pki``)."""

    def __init__(self, root: Path, server_names: dict[str, tuple[str, ...]] | None = None) -> None:
        """`server_names`: more names (addresses) for the server certificate of a node or module
        ID, besides localhost (a network whose sites have their own addresses)."""
        self.root = root.resolve()
        self._names = dict(server_names or {})
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._cas = {d: _ca(self.root, d) for d in DOMAINS}

    def ca_cert(self, domain: str) -> Path:
        return self._cas[domain].paths.cert

    def sae(self, sae_id: str) -> CertPaths:
        return _cert(self._cas["sae"], self.root / "sae", sae_id, sae_id, server=False, client=True)

    def node(self, node_id: str) -> NodeCredentials:
        return NodeCredentials(
            sae_ca=self.ca_cert("sae"),
            sae_server=_cert(
                self._cas["sae"],
                self.root / "sae",
                f"node-{node_id}",
                node_id,
                server=True,
                client=False,
                extra_names=self._names.get(node_id, ()),
            ),
            node_ca=self.ca_cert("node"),
            node=_cert(
                self._cas["node"],
                self.root / "node",
                node_id,
                node_id,
                server=True,
                client=True,
                extra_names=self._names.get(node_id, ()),
            ),
            module_ca=self.ca_cert("module"),
            module_client=_cert(
                self._cas["module"],
                self.root / "module",
                f"node-{node_id}",
                node_id,
                server=False,
                client=True,
            ),
        )

    def module(self, module_id: str) -> CertPaths:
        return _cert(
            self._cas["module"],
            self.root / "module",
            module_id,
            module_id,
            server=True,
            client=False,
            extra_names=self._names.get(module_id, ()),
        )

    def node_admin(self) -> CertPaths:
        return _cert(
            self._cas["node"], self.root / "node", ADMIN_CN, ADMIN_CN, server=False, client=True
        )

    def module_admin(self) -> CertPaths:
        return _cert(
            self._cas["module"], self.root / "module", ADMIN_CN, ADMIN_CN, server=False, client=True
        )


def ensure_link_auth_key(path: Path, size: int = AUTH_KEY_BYTES) -> Path:
    """The pre-shared initial authentication key of one link (OS CSPRNG, mode 0600)."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(os.urandom(size))
    return path
