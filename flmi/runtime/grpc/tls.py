"""Mutual-TLS credentials from the bundles :mod:`flmi.runtime.grpc.provisioning` writes."""

from __future__ import annotations

from pathlib import Path

import grpc

from flmi.core.errors import ConfigError
from flmi.runtime.grpc.provisioning import CA_CERT, SERVER_CERT, SERVER_KEY, SITE_CERT, SITE_KEY


def _read(bundle: Path, name: str, *, flag: str) -> bytes:
    path = bundle / name
    if not path.is_file():
        raise ConfigError(
            f"{flag} {bundle}: no {name} there; point {flag} at a bundle written by `flmi certs`"
        )
    return path.read_bytes()


def server_credentials(bundle: Path) -> grpc.ServerCredentials:
    """TLS for the server that requires, and checks against the CA, every client's certificate."""
    return grpc.ssl_server_credentials(
        [(_read(bundle, SERVER_KEY, flag="--certs"), _read(bundle, SERVER_CERT, flag="--certs"))],
        root_certificates=_read(bundle, CA_CERT, flag="--certs"),
        require_client_auth=True,
    )


def site_credentials(bundle: Path) -> grpc.ChannelCredentials:
    """TLS for a site: it checks the server against the CA and shows its own certificate."""
    return grpc.ssl_channel_credentials(
        root_certificates=_read(bundle, CA_CERT, flag="--certs"),
        private_key=_read(bundle, SITE_KEY, flag="--certs"),
        certificate_chain=_read(bundle, SITE_CERT, flag="--certs"),
    )
