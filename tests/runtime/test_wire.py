"""Tensors on the wire: raw bytes in bounded frames, every limit enforced, nothing pickled."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flmi.core.messages import (
    ClientError,
    ClientUpdate,
    ErrorCode,
    EvaluateInstruction,
    EvaluateResult,
    TrainInstruction,
    UpdateKind,
)
from flmi.runtime.grpc import flmi_pb2 as pb
from flmi.runtime.grpc import flmi_pb2_grpc as pb_grpc
from flmi.runtime.grpc.chunking import (
    Assembler,
    collect,
    data_frames,
    decode_frame,
    encode_frame,
    spec_of,
)
from flmi.runtime.grpc.codec import (
    decode_instruction,
    decode_reply,
    encode_evaluate,
    encode_reply,
    encode_train,
    tensor_specs,
)
from flmi.runtime.grpc.codes import RefusalError, WireError
from flmi.runtime.grpc.schema import first_difference
from flmi.runtime.grpc.transport import SERVICE, add_federation_service


def _params() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "a.weight": rng.normal(size=(7, 5)).astype(np.float32),
        "b.bias": rng.normal(size=(3,)).astype(np.float64),
        "c.scalar": np.array(1.5, dtype=np.float32),
    }


@settings(max_examples=40, deadline=None)
@given(chunk=st.integers(min_value=1, max_value=200))
def test_any_chunk_size_reassembles_the_same_bytes(chunk: int) -> None:
    params = _params()
    arrays = [params[k] for k in sorted(params)]
    specs = [spec_of(k, params[k]) for k in sorted(params)]

    frames = [pb.Frame.FromString(f).data for f in data_frames(arrays, chunk_bytes=chunk)]
    decoded = [decode_frame(pb.Frame(data=f).SerializeToString()) for f in frames]
    tensors = dict(collect(decoded, specs_of=specs, chunk_bytes=chunk, max_payload_bytes=1000))

    assert all(len(f) <= chunk for f in frames)
    assert all(len(f) == chunk for f in frames[:-1])
    for name, value in params.items():
        assert tensors[name].dtype == value.dtype and tensors[name].shape == value.shape
        np.testing.assert_array_equal(tensors[name], value)


@settings(max_examples=60, deadline=None)
@given(data=st.binary(min_size=1, max_size=300))
def test_data_frames_are_byte_for_byte_protobufs_encoding_and_read_back_without_a_copy(
    data: bytes,
) -> None:
    (ours,) = data_frames([np.frombuffer(data, dtype=np.uint8)], chunk_bytes=1000)
    expected = pb.Frame(data=data).SerializeToString()
    assert ours == expected
    assert encode_frame(ours) is ours
    decoded = decode_frame(expected)
    assert isinstance(decoded, memoryview) and decoded.obj is expected
    assert bytes(decoded) == data


def test_header_frames_and_frames_with_other_fields_go_through_protobuf() -> None:
    header = pb.Frame(reply=pb.Reply(ticket="t", payload_bytes=3))
    assert encode_frame(header) == header.SerializeToString()
    assert decode_frame(header.SerializeToString()) == header
    # A data frame followed by an unknown field is not the fast shape: protobuf reads it.
    odd = pb.Frame(data=b"abc").SerializeToString() + b"\x78\x01"
    decoded = decode_frame(odd)
    assert isinstance(decoded, pb.Frame) and decoded.data == b"abc"


def test_an_empty_payload_sends_no_data_frame() -> None:
    assert list(data_frames([np.zeros(0, np.float32)], chunk_bytes=16)) == []


def test_the_bindings_serve_every_method_of_the_proto_service() -> None:
    class Recorder:
        def __init__(self) -> None:
            self.methods: list[str] = []

        def add_generic_rpc_handlers(self, handlers: object) -> None:
            pass

        def add_registered_method_handlers(self, service: str, methods: dict[str, object]) -> None:
            assert service == SERVICE
            self.methods = sorted(methods)

    recorder = Recorder()
    add_federation_service(pb_grpc.FederationServicer(), recorder)  # type: ignore[arg-type]
    proto = pb.DESCRIPTOR.services_by_name["Federation"]
    assert recorder.methods == sorted(m.name for m in proto.methods)


def test_train_instruction_and_update_round_trip_exactly() -> None:
    params = _params()
    instruction = TrainInstruction(
        rnd=3,
        params=params,
        hparams={"lr": 0.01, "local_epochs": 2, "optimizer": "adam"},
        extras={"scaffold/c": params["b.bias"]},
    )
    header, arrays = encode_train("t1", instruction)
    frames = map(decode_frame, data_frames(arrays, chunk_bytes=16))
    got = decode_instruction(
        header,
        collect(frames, specs_of=tensor_specs(header), chunk_bytes=16, max_payload_bytes=10**6),
    )
    assert isinstance(got, TrainInstruction)
    assert got.rnd == 3 and dict(got.hparams) == dict(instruction.hparams)
    assert type(got.hparams["local_epochs"]) is int and type(got.hparams["lr"]) is float
    assert sorted(got.params) == sorted(params) and sorted(got.extras) == ["scaffold/c"]

    update = ClientUpdate(
        site="ignored",
        params=params,
        kind=UpdateKind.FULL,
        num_examples=12,
        num_steps=4,
        metrics={"loss": 0.5},
    )
    reply, arrays = encode_reply("t1", update)
    tensors = collect(
        map(decode_frame, data_frames(arrays, chunk_bytes=64)),
        specs_of=tensor_specs(reply),
        chunk_bytes=64,
        max_payload_bytes=10**6,
    )
    back = decode_reply("hospital_1", reply, tensors)
    assert isinstance(back, ClientUpdate)
    assert back.site == "hospital_1"  # the certified name, never what the sender claims
    assert back.num_examples == 12 and dict(back.metrics) == {"loss": 0.5}
    for name in params:
        np.testing.assert_array_equal(back.params[name], params[name])


def test_evaluation_request_result_and_error_round_trip() -> None:
    header, arrays = encode_evaluate(
        "t2", EvaluateInstruction(rnd=2, params=_params(), split="val", personal=True)
    )
    tensors = collect(
        map(decode_frame, data_frames(arrays, chunk_bytes=32)),
        specs_of=tensor_specs(header),
        chunk_bytes=32,
        max_payload_bytes=10**6,
    )
    got = decode_instruction(header, tensors)
    assert isinstance(got, EvaluateInstruction) and got.split == "val" and got.personal

    result = EvaluateResult(
        site="x", split="test", num_examples=9, metrics={"auc": 0.75}, ci={"auc": (0.5, 0.9)}
    )
    reply, _ = encode_reply("t2", result)
    back = decode_reply("hospital_2", reply, [])
    assert isinstance(back, EvaluateResult) and back.ci == {"auc": (0.5, 0.9)}

    error = ClientError(site="x", code=ErrorCode.HPARAM_REFUSED, message="lr too high")
    reply, _ = encode_reply("t2", error)
    back_error = decode_reply("hospital_2", reply, [])
    assert back_error == ClientError(
        site="hospital_2", code=ErrorCode.HPARAM_REFUSED, message="lr too high"
    )


def test_a_frame_over_the_chunk_limit_is_refused() -> None:
    assembler = Assembler(
        specs=[spec_of("w", np.zeros(100, np.float32))], chunk_bytes=64, max_payload_bytes=10**6
    )
    with pytest.raises(RefusalError) as refused:
        assembler.add(b"\0" * 65)
    assert refused.value.code == WireError.MESSAGE_TOO_LARGE


def test_more_or_fewer_bytes_than_declared_are_refused() -> None:
    spec = spec_of("w", np.zeros(4, np.float32))
    too_many = Assembler(specs=[spec], chunk_bytes=64, max_payload_bytes=10**6)
    with pytest.raises(RefusalError, match="more bytes"):
        too_many.add(b"\0" * 17)
    too_few = Assembler(specs=[spec], chunk_bytes=64, max_payload_bytes=10**6)
    too_few.add(b"\0" * 8)
    with pytest.raises(RefusalError, match="received 8 of the 16"):
        too_few.tensors()


def test_a_payload_over_the_limit_is_refused_before_any_memory_is_taken() -> None:
    spec = pb.TensorSpec(name="huge", dtype="float32", shape=[1 << 20, 1 << 20])
    with pytest.raises(RefusalError) as refused:
        Assembler(specs=[spec], chunk_bytes=64, max_payload_bytes=1 << 30)
    assert refused.value.code == WireError.MESSAGE_TOO_LARGE


@pytest.mark.parametrize("dtype", ["object", "O", "<U4", "complex128", "V8"])
def test_dtypes_that_are_not_plain_numbers_are_refused(dtype: str) -> None:
    with pytest.raises(RefusalError, match="dtype"):
        Assembler(
            specs=[pb.TensorSpec(name="x", dtype=dtype, shape=[2])],
            chunk_bytes=64,
            max_payload_bytes=64,
        )


def test_schema_difference_names_the_first_differing_tensor() -> None:
    params = _params()
    specs = [spec_of(k, v) for k, v in sorted(params.items())]
    assert first_difference(params, specs) is None
    specs[1] = pb.TensorSpec(name="b.bias", dtype="float64", shape=[4])
    specs[2] = pb.TensorSpec(name="c.scalar", dtype="float64", shape=[])
    assert first_difference(params, specs) == "tensor 'b.bias' has shape (4,), expected (3,)"
    assert first_difference(params, specs[:1]) == "tensor 'b.bias' is missing"
    assert first_difference(params, specs[:1], allow_missing=True) is None
