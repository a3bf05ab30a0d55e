"""Site identities for signed protocol messages: the consortium's CA vouches for each site.

A site proves who it is with the certificate the consortium's CA issued it
(the certificate's common name is the site's name) and the private key that
goes with it: in a deployment, the site's mutual-TLS certificate and key from
its bundle; in simulation, certificates that :func:`simulated_consortium`
issues in memory from a throwaway CA. The server relays what sites sign but
holds no site's key and no CA key, so it cannot speak for a site.

For each run a site makes a fresh Ed25519 key (:class:`RunKey`) and signs its
public half once with its certificate key (an :class:`Announcement`); what it
signs during the protocol it signs with the run key. The long-lived
certificate key so signs one message per run, and a run key is worthless once
its process has ended.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import NameOID

from flmi.privacy.wire import Payload, ProtocolError

ED25519_BYTES = 32
_ECDSA = ec.ECDSA(hashes.SHA256())


def _binding(site: str, public: bytes) -> bytes:
    return b"flmi run key|" + site.encode() + b"|" + public


def _common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1:
        return ""
    value = names[0].value
    return value if isinstance(value, str) else value.decode()


@dataclass(frozen=True)
class SiteCredential:
    """A site's certificate (PEM) and its private key: what it proves its identity with.

    Parameters
    ----------
    site
        The site's name (its certificate's common name).
    certificate
        The PEM certificate the consortium's CA issued to the site.
    key
        The certificate's private key; it never leaves the site.
    """

    site: str
    certificate: bytes
    key: ec.EllipticCurvePrivateKey

    def sign(self, message: bytes) -> bytes:
        """An ECDSA-SHA256 signature of ``message`` with the certificate key."""
        return self.key.sign(message, _ECDSA)


@dataclass(frozen=True)
class Authority:
    """The consortium's CA certificate (PEM): whom a site believes about another's identity.

    Parameters
    ----------
    ca_certificate
        The CA certificate every site's bundle holds.
    """

    ca_certificate: bytes

    def verify(
        self, *, site: str, certificate: bytes, message: bytes, signature: bytes, where: str
    ) -> None:
        """Check that ``certificate`` is ``site``'s, issued by the CA, and signed ``message``.

        Raises
        ------
        ProtocolError
            The certificate is not the CA's, names another site, has expired,
            or the signature does not verify.
        """
        try:
            ca = x509.load_pem_x509_certificate(self.ca_certificate)
            cert = x509.load_pem_x509_certificate(certificate)
        except ValueError:
            raise ProtocolError(f"{where}: '{site}' sent no readable certificate") from None
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            raise ProtocolError(
                f"{where}: the certificate shown for '{site}' is not issued by the consortium CA"
            ) from None
        now = dt.datetime.now(dt.UTC)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise ProtocolError(f"{where}: the certificate of '{site}' is not valid now")
        if _common_name(cert) != site:
            raise ProtocolError(
                f"{where}: the certificate shown for '{site}' is '{_common_name(cert)}''s"
            )
        public = cert.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise ProtocolError(f"{where}: the certificate of '{site}' holds no ECDSA key")
        try:
            public.verify(signature, message, _ECDSA)
        except InvalidSignature:
            raise ProtocolError(f"{where}: the signature of '{site}' does not verify") from None


@dataclass(frozen=True)
class Announcement:
    """A site's run key, signed with its certificate key.

    Parameters
    ----------
    site
        Who announces.
    public
        The raw 32-byte Ed25519 public run key.
    certificate
        The site's PEM certificate.
    binding
        The certificate key's signature of the site's name and the run key.
    """

    site: str
    public: bytes
    certificate: bytes
    binding: bytes

    def blobs(self, prefix: str) -> dict[str, bytes]:
        """The announcement as blobs ``PREFIX/pk``, ``PREFIX/cert`` and ``PREFIX/sig``."""
        return {
            f"{prefix}/pk": self.public,
            f"{prefix}/cert": self.certificate,
            f"{prefix}/sig": self.binding,
        }

    @staticmethod
    def from_payload(payload: Payload, *, prefix: str, site: str, where: str) -> Announcement:
        """The announcement of ``site`` that :meth:`blobs` wrote into ``payload``."""
        return Announcement(
            site=site,
            public=payload.blob(f"{prefix}/pk", where=where, size=ED25519_BYTES),
            certificate=payload.blob(f"{prefix}/cert", where=where),
            binding=payload.blob(f"{prefix}/sig", where=where),
        )

    def verified(self, authority: Authority, *, where: str) -> Ed25519PublicKey:
        """The run key, once the CA's certificate of this site vouches for it.

        Raises
        ------
        ProtocolError
            The certificate or its signature of the run key does not verify.
        """
        authority.verify(
            site=self.site,
            certificate=self.certificate,
            message=_binding(self.site, self.public),
            signature=self.binding,
            where=where,
        )
        return Ed25519PublicKey.from_public_bytes(self.public)


class RunKey:
    """A site's signing key for one run: fresh Ed25519, announced once under its certificate.

    Parameters
    ----------
    credential
        The site's certificate and key.
    """

    def __init__(self, *, credential: SiteCredential) -> None:
        self._key = Ed25519PrivateKey.generate()
        self.public = self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.announcement = Announcement(
            site=credential.site,
            public=self.public,
            certificate=credential.certificate,
            binding=credential.sign(_binding(credential.site, self.public)),
        )

    def sign(self, message: bytes) -> bytes:
        """An Ed25519 signature of ``message``."""
        return self._key.sign(message)


def verify_signature(key: Ed25519PublicKey, *, signature: bytes, message: bytes) -> bool:
    """Whether ``signature`` is ``key``'s signature of ``message``."""
    try:
        key.verify(signature, message)
    except InvalidSignature:
        return False
    return True


def simulated_consortium(
    sites: list[str], *, days: int = 30
) -> tuple[Authority, dict[str, SiteCredential]]:
    """A throwaway CA and one certificate per site, in memory (simulation).

    The CA's key is dropped when this returns: nobody, the simulated server
    included, can issue another certificate from it.
    """
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flmi simulation CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    credentials: dict[str, SiteCredential] = {}
    for site in sites:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, site)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        credentials[site] = SiteCredential(
            site=site, certificate=cert.public_bytes(serialization.Encoding.PEM), key=key
        )
    return Authority(ca_certificate=ca.public_bytes(serialization.Encoding.PEM)), credentials
