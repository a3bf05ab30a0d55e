"""Direct gRPC calls from the test process: a misbehaving or unauthorised site."""

from __future__ import annotations

from pathlib import Path

import grpc

from flmi.core.params import Params, schema_hash
from flmi.runtime.grpc import flmi_pb2 as pb
from flmi.runtime.grpc.codes import PROTOCOL_VERSION
from flmi.runtime.grpc.schema import schema_specs
from flmi.runtime.grpc.transport import FederationStub


def stub(address: str, *, ca: Path, bundle: Path | None) -> FederationStub:
    """A stub over TLS that trusts ``ca``; it shows ``bundle``'s certificate if one is given."""
    if bundle is None:
        credentials = grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
    else:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=ca.read_bytes(),
            private_key=(bundle / "site.key").read_bytes(),
            certificate_chain=(bundle / "site.pem").read_bytes(),
        )
    return FederationStub(grpc.secure_channel(address, credentials))


def register_request(params: Params, *, task: str = "classification") -> pb.RegisterRequest:
    """The handshake a site with the model ``params`` sends."""
    return pb.RegisterRequest(
        protocol_version=PROTOCOL_VERSION,
        task=task,
        schema_sha256=schema_hash(params),
        schema=schema_specs(params),
    )


def code_of(exc: grpc.RpcError) -> str:
    """The flmi error code of a refused call."""
    return dict(exc.trailing_metadata() or ()).get("flmi-error-code", "")
