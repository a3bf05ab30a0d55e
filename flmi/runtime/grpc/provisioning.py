"""Certificates for a consortium: one CA, a server certificate, one bundle per site.

A site's identity is its certificate's subject common name: no passwords, no
tokens. The CA's private key stays in the CA folder and is never written into
a bundle. Keys are written with mode 0600; every certificate carries an expiry.
Keys are ECDSA P-256, which gRPC's TLS stack accepts everywhere.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from flmi.core.errors import FlmiError

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
SERVER_DIR = "server"
SERVER_CERT = "server.pem"
SERVER_KEY = "server.key"
SITE_CERT = "site.pem"
SITE_KEY = "site.key"
SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class ProvisioningError(FlmiError):
    """A certificate cannot be made without overwriting or weakening something."""


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _issue(
    *,
    subject: str,
    public_key: ec.EllipticCurvePublicKey,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    days: int,
    usage: x509.ObjectIdentifier,
    alt_names: list[x509.GeneralName],
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(_now() + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def init_ca(
    *,
    ca_dir: Path,
    consortium: str = "flmi consortium",
    server_name: str = "localhost",
    days: int = 365,
) -> Path:
    """Create a consortium CA in ``ca_dir`` and a server bundle in ``ca_dir/server``.

    Parameters
    ----------
    ca_dir
        Folder for the CA (created; refused if it already holds a CA key).
    consortium
        The CA's common name.
    server_name
        The server's DNS name (also valid for 127.0.0.1 and ::1 when ``localhost``).
    days
        Validity of the server certificate; the CA is valid ten times as long.

    Returns
    -------
    Path
        The server bundle folder (CA certificate, server certificate and key).
    """
    if days < 1:
        raise ProvisioningError(f"--days must be at least 1, got {days}")
    if (ca_dir / CA_KEY).exists():
        raise ProvisioningError(
            f"{ca_dir} already holds a CA key; refusing to overwrite it (choose another folder)"
        )
    ca_dir.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = _self_signed_ca(consortium=consortium, days=10 * days)
    _write_key(ca_dir / CA_KEY, ca_key)
    _write_cert(ca_dir / CA_CERT, ca_cert)
    server_dir = ca_dir / SERVER_DIR
    server_dir.mkdir()
    server_cert, server_key = _server_certificate(
        server_name=server_name, ca_cert=ca_cert, ca_key=ca_key, days=days
    )
    _write_key(server_dir / SERVER_KEY, server_key)
    _write_cert(server_dir / SERVER_CERT, server_cert)
    _write_cert(server_dir / CA_CERT, ca_cert)
    return server_dir


def _self_signed_ca(
    *, consortium: str, days: int
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A new P-256 CA key and its self-signed certificate, valid ``days`` and only for signing."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(consortium))
        .issuer_name(_name(consortium))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(_now() + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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
        .sign(ca_key, hashes.SHA256())
    )
    return ca_cert, ca_key


def _server_certificate(
    *,
    server_name: str,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    days: int,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A new server key and its certificate for ``server_name`` (and loopback for localhost)."""
    server_key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(server_name)]
    if server_name == "localhost":
        names += [
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
    server_cert = _issue(
        subject=server_name,
        public_key=server_key.public_key(),
        ca_cert=ca_cert,
        ca_key=ca_key,
        days=days,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        alt_names=names,
    )
    return server_cert, server_key


def _load_ca(ca_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    for name in (CA_CERT, CA_KEY):
        if not (ca_dir / name).is_file():
            raise ProvisioningError(
                f"{ca_dir} holds no {name}; run `flmi certs init {ca_dir}` first"
            )
    cert = x509.load_pem_x509_certificate((ca_dir / CA_CERT).read_bytes())
    key = serialization.load_pem_private_key((ca_dir / CA_KEY).read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ProvisioningError(f"{ca_dir / CA_KEY} is not an ECDSA key")
    return cert, key


def add_site(
    *, ca_dir: Path, name: str, out: Path, csr: Path | None = None, days: int = 365
) -> Path:
    """Write a site bundle: the CA certificate, the site certificate and (without a CSR) its key.

    Parameters
    ----------
    ca_dir
        The consortium CA folder made by :func:`init_ca`.
    name
        The site's name, which becomes its certificate's common name: its identity.
    out
        The bundle folder (created; refused if it already holds a site certificate).
    csr
        A certificate signing request made at the site: its key never leaves the
        site, and the bundle then holds no key.
    days
        Validity of the site certificate.
    """
    if not SITE_NAME.match(name):
        raise ProvisioningError(
            f"site name {name!r} must be 1-63 letters, digits, '_', '.' or '-', starting "
            "with a letter or digit"
        )
    if days < 1:
        raise ProvisioningError(f"--days must be at least 1, got {days}")
    if (out / SITE_CERT).exists():
        raise ProvisioningError(f"{out} already holds a site certificate; choose another --out")
    ca_cert, ca_key = _load_ca(ca_dir)
    key: ec.EllipticCurvePrivateKey | None = None
    if csr is not None:
        if not csr.is_file():
            raise ProvisioningError(f"--csr: no such file: {csr}")
        request = x509.load_pem_x509_csr(csr.read_bytes())
        if not request.is_signature_valid:
            raise ProvisioningError(f"--csr {csr}: the request's signature is invalid")
        public = request.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise ProvisioningError(f"--csr {csr}: the request must hold an ECDSA key")
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        public = key.public_key()
    cert = _issue(
        subject=name,
        public_key=public,
        ca_cert=ca_cert,
        ca_key=ca_key,
        days=days,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        alt_names=[],
    )
    out.mkdir(parents=True, exist_ok=True)
    if key is not None:
        _write_key(out / SITE_KEY, key)
    _write_cert(out / SITE_CERT, cert)
    _write_cert(out / CA_CERT, ca_cert)
    return out


def site_identity(cert_pem: bytes) -> str:
    """The site name a certificate asserts (its subject common name)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1:
        raise ProvisioningError("certificate must carry exactly one common name")
    value = names[0].value
    return value if isinstance(value, str) else value.decode()
