"""StagedExchange relays opaque bytes between sites, by stage and round, naming the sender."""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np
import pytest

from flmi.runtime.grpc import flmi_pb2 as pb
from flmi.runtime.grpc.coordinator import Coordinator
from flmi.runtime.grpc.service import FederationService, ServiceSettings

SITES = ["hospital_1", "hospital_2", "hospital_3"]


class Context:
    """The parts of a gRPC servicer context the service reads: the peer's certificate name."""

    def __init__(self, site: str) -> None:
        self._site = site
        self.code: Any = None

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_common_name": [self._site.encode()]}

    def set_trailing_metadata(self, metadata: Any) -> None:
        self.metadata = metadata

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code = code
        raise RuntimeError(details)


def _service() -> FederationService:
    coordinator = Coordinator(sites=SITES, heartbeat_s=1.0)
    for site in SITES:
        coordinator.register(site)
    return FederationService(
        coordinator=coordinator,
        settings=ServiceSettings(
            task="classification",
            strategy="fedavg",
            rounds=1,
            reference={"w": np.zeros(2, np.float32)},
            plans={},
            chunk_bytes=1024,
            max_message_bytes=1 << 20,
            max_payload_bytes=1 << 20,
            heartbeat_s=1.0,
        ),
        audit=None,
    )


def test_a_message_reaches_its_recipient_once_with_the_certified_sender() -> None:
    service = _service()
    sent = pb.StagedMessage(
        stage="keys", round=2, sender="someone_else", recipient="hospital_2", payload=b"\x00key"
    )

    service.StagedExchange(
        pb.StagedRequest(outgoing=[sent], stage="keys", round=2), Context("hospital_1")
    )
    received = service.StagedExchange(
        pb.StagedRequest(stage="keys", round=2), Context("hospital_2")
    )
    again = service.StagedExchange(pb.StagedRequest(stage="keys", round=2), Context("hospital_2"))

    assert [(m.sender, m.payload) for m in received.incoming] == [("hospital_1", b"\x00key")]
    assert list(again.incoming) == []


def test_a_message_without_recipient_goes_to_every_other_site_for_its_stage_and_round() -> None:
    service = _service()
    share = pb.StagedMessage(stage="shares", round=1, payload=b"s")

    service.StagedExchange(pb.StagedRequest(outgoing=[share]), Context("hospital_3"))
    other_stage = service.StagedExchange(
        pb.StagedRequest(stage="keys", round=1), Context("hospital_1")
    )
    first = service.StagedExchange(pb.StagedRequest(stage="shares", round=1), Context("hospital_1"))
    second = service.StagedExchange(
        pb.StagedRequest(stage="shares", round=1), Context("hospital_2")
    )
    sender = service.StagedExchange(
        pb.StagedRequest(stage="shares", round=1), Context("hospital_3")
    )

    assert list(other_stage.incoming) == []
    assert [m.sender for m in first.incoming] == ["hospital_3"]
    assert [m.sender for m in second.incoming] == ["hospital_3"]
    assert list(sender.incoming) == []


def test_a_message_to_an_unknown_site_is_refused() -> None:
    service = _service()
    context = Context("hospital_1")
    bad = pb.StagedMessage(stage="keys", round=1, recipient="nobody", payload=b"x")

    with pytest.raises(RuntimeError, match="no site named 'nobody'"):
        service.StagedExchange(pb.StagedRequest(outgoing=[bad]), context)
    assert context.code == grpc.StatusCode.INVALID_ARGUMENT
