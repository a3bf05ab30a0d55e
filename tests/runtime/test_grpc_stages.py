"""Protocol stages on the gRPC runtime: wire form, the server's exchange, register, the plan."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from flmi.config import PrivacyConfig
from flmi.core.errors import ConfigError
from flmi.core.exchange import StagedExchange, StageReply
from flmi.core.messages import ClientError, ErrorCode
from flmi.privacy.site import SecureSite
from flmi.runtime.grpc import flmi_pb2 as pb
from flmi.runtime.grpc.chunking import collect, data_frames, decode_frame
from flmi.runtime.grpc.codec import (
    StageMessage,
    audit_label,
    decode_instruction,
    decode_reply,
    encode_reply,
    encode_stage,
    tensor_specs,
)
from flmi.runtime.grpc.codes import RefusalError, WireError
from flmi.runtime.grpc.coordinator import Coordinator, GrpcRuntime
from flmi.runtime.grpc.secure import (
    CAPABILITY_STAGES,
    EXIT_AT_STAGE_ENV,
    AggregationPlan,
    ExitAtStage,
    exit_at_stage,
    protect,
)
from flmi.runtime.grpc.service import FederationService, ServiceSettings
from flmi.runtime.grpc.siteconf import Bounds, load_site_settings
from tests.runtime.grpc_calls import register_request
from tests.runtime.test_staged_exchange import Context

SITES = ["hospital_1", "hospital_2", "hospital_3"]


def _through_the_wire(header: Any, arrays: list[np.ndarray]) -> list[tuple[str, np.ndarray]]:
    frames = [decode_frame(raw) for raw in data_frames(arrays, chunk_bytes=7)]
    return collect(frames, specs_of=tensor_specs(header), chunk_bytes=7, max_payload_bytes=1 << 20)


def test_a_stage_and_its_answer_cross_the_wire_in_chunks_byte_for_byte() -> None:
    payload = bytes(range(256)) * 3
    header, arrays = encode_stage("t-1", StageMessage(stage="secagg/share", rnd=4, payload=payload))

    received = decode_instruction(header, _through_the_wire(header, arrays))
    reply_header, reply_arrays = encode_reply("t-1", StageMessage("secagg/share", 4, b"\x00\xff"))
    answer = decode_reply("hospital_1", reply_header, _through_the_wire(reply_header, reply_arrays))

    assert received == StageMessage(stage="secagg/share", rnd=4, payload=payload)
    assert answer == StageMessage(stage="secagg/share", rnd=4, payload=b"\x00\xff")
    assert audit_label("Instruction", header) == "Instruction:staged:secagg/share"
    assert audit_label("Reply", reply_header) == "Reply:staged:secagg/share"


def test_an_empty_stage_payload_crosses_the_wire() -> None:
    header, arrays = encode_stage("t", StageMessage(stage="he/hello", rnd=1, payload=b""))

    assert decode_instruction(header, _through_the_wire(header, arrays)).payload == b""  # type: ignore[union-attr]


def test_a_stage_payload_sent_inline_rather_than_in_data_frames_is_refused() -> None:
    header = pb.Reply(
        ticket="t", staged=pb.StagedMessage(stage="secagg/masked", round=1, payload=b"y")
    )

    with pytest.raises(RefusalError) as refused:
        decode_reply("hospital_1", header, _through_the_wire(header, []))
    assert refused.value.code is WireError.BAD_FRAME


def _answer_when_posted(coordinator: Coordinator, answers: Mapping[str, Any]) -> threading.Thread:
    """Play the service: fill in each site's reply once its stage is posted."""

    def play() -> None:
        pending = dict(answers)
        deadline = time.monotonic() + 10
        while pending and time.monotonic() < deadline:
            with coordinator.cond:
                for site in list(pending):
                    posted = coordinator.posted.get(site)
                    if posted is not None:
                        posted.reply = pending.pop(site)
                coordinator.cond.notify_all()
            time.sleep(0.01)

    thread = threading.Thread(target=play)
    thread.start()
    return thread


def _runtime(timeout_s: float = 5.0) -> tuple[Coordinator, GrpcRuntime]:
    coordinator = Coordinator(sites=SITES, heartbeat_s=1.0)
    for site in SITES[:2]:  # hospital_3 never connects
        coordinator.register(site)
    return coordinator, GrpcRuntime(coordinator=coordinator, round_timeout_s=timeout_s)


def test_the_grpc_runtime_is_a_staged_exchange_that_returns_each_sites_answer() -> None:
    coordinator, runtime = _runtime()
    player = _answer_when_posted(
        coordinator,
        {
            "hospital_1": StageMessage(stage="secagg/share", rnd=2, payload=b"one"),
            "hospital_2": StageMessage(stage="secagg/advertise", rnd=2, payload=b"stale"),
        },
    )

    replies: Mapping[str, StageReply] = runtime.exchange(
        stage="secagg/share", rnd=2, payloads={s: b"to " + s.encode() for s in SITES}
    )
    player.join()

    assert isinstance(runtime, StagedExchange)
    assert replies["hospital_1"] == b"one"
    stale, absent = replies["hospital_2"], replies["hospital_3"]
    assert isinstance(stale, ClientError) and stale.code is ErrorCode.PROTOCOL_ERROR
    assert "secagg/share" in stale.message
    assert isinstance(absent, ClientError) and absent.code is ErrorCode.UNAVAILABLE
    assert coordinator.posted == {}  # a late answer finds its ticket closed


def test_a_site_silent_past_the_deadline_is_left_out_of_the_stage() -> None:
    coordinator, runtime = _runtime(timeout_s=0.3)
    player = _answer_when_posted(
        coordinator, {"hospital_1": StageMessage(stage="he/encrypt", rnd=1, payload=b"c")}
    )

    replies = runtime.exchange(
        stage="he/encrypt", rnd=1, payloads={"hospital_1": b"x", "hospital_2": b"y"}
    )
    player.join()

    late = replies["hospital_2"]
    assert replies["hospital_1"] == b"c"
    assert isinstance(late, ClientError) and late.code is ErrorCode.TIMEOUT


def _service(plan: AggregationPlan) -> FederationService:
    return FederationService(
        coordinator=Coordinator(sites=SITES, heartbeat_s=1.0),
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
            aggregation=plan,
        ),
        audit=None,
    )


def test_register_refuses_a_client_without_stages_when_the_plan_needs_them() -> None:
    request = register_request({"w": np.zeros(2, np.float32)})
    context = Context("hospital_1")

    with pytest.raises(RuntimeError, match="privacy.aggregation = 'secagg'"):
        _service(AggregationPlan(aggregation="secagg")).Register(request, context)
    accepted = _service(AggregationPlan()).Register(request, Context("hospital_1"))

    assert context.code == grpc.StatusCode.FAILED_PRECONDITION
    assert ("flmi-error-code", WireError.STAGES_UNSUPPORTED.value) in context.metadata
    assert AggregationPlan.from_wire(accepted.plan) == AggregationPlan(aggregation="plain")


def test_register_tells_a_capable_client_the_aggregation_and_ckks_settings() -> None:
    request = register_request({"w": np.zeros(2, np.float32)})
    request.capabilities.append(CAPABILITY_STAGES)
    expected = AggregationPlan.from_config(
        PrivacyConfig(aggregation="he", he_poly_modulus_degree=16384, he_scale_bits=30)
    )

    reply = _service(expected).Register(request, Context("hospital_1"))

    assert AggregationPlan.from_wire(reply.plan) == expected
    assert expected.he_poly_modulus_degree == 16384 and expected.needs_stages


class _Plain:
    name = "hospital_1"

    def train(self, instruction: Any) -> Any:
        raise AssertionError("not called")

    def evaluate(self, instruction: Any) -> Any:
        raise AssertionError("not called")


def test_the_site_wraps_itself_as_the_plan_says_and_refuses_what_it_does_not_know() -> None:
    site = _Plain()

    assert protect(site, AggregationPlan()) is site
    assert isinstance(protect(site, AggregationPlan(aggregation="secagg")), SecureSite)
    with pytest.raises(ConfigError, match="'mpc', which this site does not know"):
        protect(site, AggregationPlan(aggregation="mpc"))
    with pytest.raises(ConfigError, match="CKKS parameters are refused"):
        protect(site, AggregationPlan(aggregation="he", he_poly_modulus_degree=1024))


def test_the_test_only_fault_is_off_unless_its_variable_is_set_and_well_formed() -> None:
    assert exit_at_stage({}) is None
    fault = exit_at_stage({EXIT_AT_STAGE_ENV: "secagg/unmask@2"})
    assert fault == ExitAtStage(stage="secagg/unmask", rnd=2)
    assert fault.hit("secagg/unmask", 2) and not fault.hit("secagg/unmask", 1)
    for bad in ("secagg/unmask", "@2", "secagg/unmask@0", "secagg/unmask@x"):
        with pytest.raises(ConfigError, match=EXIT_AT_STAGE_ENV):
            exit_at_stage({EXIT_AT_STAGE_ENV: bad})


def test_a_site_that_requires_a_hidden_sum_refuses_a_plain_plan(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(
        '[data]\nfederation_config = "fed.toml"\n[bounds]\naggregation = ["secagg", "he"]\n'
    )
    bounds = load_site_settings(path, site="hospital_1").bounds

    refusal = bounds.check_aggregation("plain")

    assert bounds.check_aggregation("secagg") is None and bounds.check_aggregation("he") is None
    assert refusal is not None and refusal[0] is WireError.AGGREGATION_REFUSED
    assert "privacy.aggregation = 'plain' is not one this site allows (secagg, he)" in refusal[1]
    assert Bounds().check_aggregation("plain") is None  # no bound: anything


def test_an_unknown_aggregation_bound_is_a_site_config_error(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text('[data]\nfederation_config = "f.toml"\n[bounds]\naggregation = ["mpc"]\n')

    with pytest.raises(ConfigError, match="bounds.aggregation must be a list of"):
        load_site_settings(path, site="hospital_1")
