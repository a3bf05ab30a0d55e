"""The ``Federation`` service's gRPC bindings, with streamed frames through :mod:`chunking`.

The generated stub and registration function parse and build every ``Frame``
with protobuf, which copies each data frame's bytes three times on each side.
These bindings are the same methods under the same names, except that the two
streaming calls use :func:`encode_frame` and :func:`decode_frame`: data frames
are written from the tensors' memory and read as views of the received bytes.
The bytes on the wire are unchanged protobuf.
"""

from __future__ import annotations

from typing import Any

import grpc

from flmi.runtime.grpc import flmi_pb2 as pb
from flmi.runtime.grpc import flmi_pb2_grpc as pb_grpc
from flmi.runtime.grpc.chunking import decode_frame, encode_frame

SERVICE = "flmi.v1.Federation"


class FederationStub(pb_grpc.FederationStub):  # type: ignore[misc]
    """The generated stub, with ``FetchInstruction`` and ``SubmitUpdate`` streaming raw frames.

    Parameters
    ----------
    channel
        The channel to the server.
    """

    def __init__(self, channel: grpc.Channel) -> None:
        super().__init__(channel)  # type: ignore[no-untyped-call]
        self.FetchInstruction = channel.unary_stream(
            f"/{SERVICE}/FetchInstruction",
            request_serializer=pb.FetchRequest.SerializeToString,
            response_deserializer=decode_frame,
            _registered_method=True,
        )
        self.SubmitUpdate = channel.stream_unary(
            f"/{SERVICE}/SubmitUpdate",
            request_serializer=encode_frame,
            response_deserializer=pb.SubmitReply.FromString,
            _registered_method=True,
        )


def add_federation_service(servicer: pb_grpc.FederationServicer, server: grpc.Server) -> None:
    """Register ``servicer`` on ``server``, its two streaming methods on raw frames."""
    methods: dict[str, Any] = {
        "Register": grpc.unary_unary_rpc_method_handler(
            servicer.Register,
            request_deserializer=pb.RegisterRequest.FromString,
            response_serializer=pb.RegisterReply.SerializeToString,
        ),
        "FetchInstruction": grpc.unary_stream_rpc_method_handler(
            servicer.FetchInstruction,
            request_deserializer=pb.FetchRequest.FromString,
            response_serializer=encode_frame,
        ),
        "SubmitUpdate": grpc.stream_unary_rpc_method_handler(
            servicer.SubmitUpdate,
            request_deserializer=decode_frame,
            response_serializer=pb.SubmitReply.SerializeToString,
        ),
        "Heartbeat": grpc.unary_stream_rpc_method_handler(
            servicer.Heartbeat,
            request_deserializer=pb.HeartbeatRequest.FromString,
            response_serializer=pb.HeartbeatReply.SerializeToString,
        ),
        "Done": grpc.unary_unary_rpc_method_handler(
            servicer.Done,
            request_deserializer=pb.DoneRequest.FromString,
            response_serializer=pb.DoneReply.SerializeToString,
        ),
        "StagedExchange": grpc.unary_unary_rpc_method_handler(
            servicer.StagedExchange,
            request_deserializer=pb.StagedRequest.FromString,
            response_serializer=pb.StagedReply.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, methods),))
    server.add_registered_method_handlers(SERVICE, methods)
