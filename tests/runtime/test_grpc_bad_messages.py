"""A site that sends a wrong shape, a NaN or an oversized frame gets a code back; others go on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from flmi.config import load_config
from flmi.core.messages import ClientError, ClientUpdate, ErrorCode, UpdateKind
from flmi.runtime.grpc import flmi_pb2 as pb
from flmi.runtime.grpc.chunking import collect, data_frames
from flmi.runtime.grpc.codec import decode_instruction, encode_reply, tensor_specs
from flmi.runtime.grpc.server import deployment_task
from flmi.tasks.torch_params import params_copy
from tests.runtime.deploy_support import Deployment, fed_tables, metrics, wait, write_fed
from tests.runtime.grpc_calls import code_of, register_request, stub

pytestmark = pytest.mark.slow
SITES = ["hospital_1", "hospital_2"]
CHUNK = 4096


def _frames(header: pb.Reply, arrays: list[np.ndarray], chunk: int) -> Iterator[pb.Frame | bytes]:
    yield pb.Frame(reply=header)
    yield from data_frames(arrays, chunk_bytes=chunk)


def test_wrong_shape_nan_and_oversized_updates_get_codes_back_while_the_server_serves_others(
    deployment: Deployment, tmp_path: Path
) -> None:
    # Arrange: hospital_1 is a real client; hospital_2 is this test, misbehaving each round.
    fed = write_fed(
        deployment,
        fed_tables(
            site_names=SITES,
            federation={"rounds": 3, "eval_every": 3},
            deploy={"chunk_bytes": CHUNK, "max_message_bytes": CHUNK + 65536},
        ),
    )
    model = params_copy(deployment_task(load_config(fed)).build_model(seed=0))
    run = tmp_path / "run"
    server, address = deployment.start_server(out=run)
    good = deployment.start_client("hospital_1", address)
    bad = stub(address, ca=deployment.ca / "ca.pem", bundle=deployment.bundle("hospital_2"))
    bad.Register(register_request(model), timeout=60)
    name = sorted(model)[0]
    codes: dict[int, str] = {}

    # Act
    last = ""
    while True:
        frames = bad.FetchInstruction(pb.FetchRequest(after_ticket=last, wait_s=2.0), timeout=120)
        header = next(frames).instruction
        kind = header.WhichOneof("body")
        if kind == "finish":
            break
        if kind == "wait":
            continue
        tensors = collect(
            frames, specs_of=tensor_specs(header), chunk_bytes=CHUNK, max_payload_bytes=1 << 30
        )
        instruction = decode_instruction(header, tensors)
        last = header.ticket
        if kind == "evaluate":
            error = ClientError(site="hospital_2", code=ErrorCode.DATA_ERROR, message="no split")
            reply, arrays = encode_reply(header.ticket, error)
            bad.SubmitUpdate(_frames(reply, arrays, CHUNK), timeout=60)
            continue
        params = {k: np.array(v) for k, v in instruction.params.items()}
        chunk = CHUNK
        if instruction.rnd == 1:
            params[name] = np.zeros((*params[name].shape, 2), dtype=params[name].dtype)
        elif instruction.rnd == 2:
            params[name][...] = np.nan
        else:
            chunk = 4 * CHUNK  # frames four times the limit
        update = ClientUpdate(
            site="hospital_2",
            params=params,
            kind=UpdateKind.FULL,
            num_examples=10,
            num_steps=1,
            metrics={},
        )
        reply, arrays = encode_reply(header.ticket, update)
        with pytest.raises(grpc.RpcError) as refused:
            bad.SubmitUpdate(_frames(reply, arrays, chunk), timeout=60)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        codes[instruction.rnd] = code_of(refused.value)
    bad.Done(pb.DoneRequest(), timeout=30)

    # Assert
    assert codes == {1: "schema_mismatch", 2: "non_finite_update", 3: "message_too_large"}
    assert wait(good) == 0 and wait(server) == 0
    failed = [line["sites_failed"] for line in metrics(run)]
    assert failed == [
        {"hospital_2": "schema_mismatch"},
        {"hospital_2": "non_finite_update"},
        {"hospital_2": "rejected_by_server"},
    ]
    assert [sorted(line["per_site"]) for line in metrics(run)][-1] == ["hospital_1"]
    log = (tmp_path / "server-0.log").read_text()
    assert log.count("refused a message from site hospital_2") == 3
    assert (run / "model.safetensors").is_file()
