"""A small X.509 CA: it issues client and server certificates (EC P-256, SHA-256).

Identity convention (documented in docs/keyserver.md): an SAE's, node's or module's ID is the
subject common name (CN) of its certificate. Server certificates also carry the host names /
addresses they serve on (DNS and IP subjectAltNames) so clients can verify them as servers.
The trust domains of a network, each with its own CA, are in :mod:`keyserver.pki.domains`.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = datetime.timedelta(days=825)


@dataclass(frozen=True)
class CertPaths:
    """Where one entity's PEM certificate and private key live."""

    cert: Path
    key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "qphone keyserver demo"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


class CertificateAuthority:
    """A CA whose key sits in a directory; issues KME and SAE certificates."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, paths: CertPaths):
        self.cert = cert
        self.key = key
        self.paths = paths

    @classmethod
    def create(cls, directory: Path, name: str = "qphone demo CA") -> CertificateAuthority:
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        paths = CertPaths(directory / "ca.pem", directory / "ca.key")
        _write_key(paths.key, key)
        _write_cert(paths.cert, cert)
        return cls(cert, key, paths)

    @classmethod
    def load(cls, directory: Path) -> CertificateAuthority:
        paths = CertPaths(directory / "ca.pem", directory / "ca.key")
        cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
        key = serialization.load_pem_private_key(paths.key.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{paths.key}: expected an EC private key")
        return cls(cert, key, paths)

    def issue(
        self,
        directory: Path,
        stem: str,
        common_name: str,
        *,
        server_names: tuple[str, ...] = (),
        client: bool = True,
    ) -> CertPaths:
        """Issue a cert with subject CN `common_name`; `server_names` makes it a server cert too."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        usages = []
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        if server_names:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if server_names:
            sans: list[x509.GeneralName] = []
            for n in server_names:
                try:
                    sans.append(x509.IPAddress(ipaddress.ip_address(n)))
                except ValueError:
                    sans.append(x509.DNSName(n))
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        directory.mkdir(parents=True, exist_ok=True)
        paths = CertPaths(directory / f"{stem}.pem", directory / f"{stem}.key")
        _write_key(paths.key, key)
        _write_cert(paths.cert, cert)
        return paths


LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
