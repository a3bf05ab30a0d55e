"""The messages of :mod:`flmi.core.messages` to and from their wire form.

A message becomes a header (a protobuf message holding tensor specs) plus the
tensors' arrays in spec order; :mod:`flmi.runtime.grpc.chunking` moves the
arrays' bytes. A protocol stage (secure or homomorphic aggregation) travels the
same way: a ``staged`` header naming the stage and round, and its opaque
payload as one ``uint8`` array. Nothing is pickled.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass

import numpy as np

from flmi.core.messages import (
    ClientError,
    ClientUpdate,
    ErrorCode,
    EvaluateInstruction,
    EvaluateResult,
    HParamValue,
    TrainInstruction,
    UpdateKind,
)
from flmi.core.params import Params
from flmi.runtime.grpc import flmi_pb2 as pb
from flmi.runtime.grpc.chunking import spec_of
from flmi.runtime.grpc.codes import RefusalError, WireError

#: The name of a stage payload's one array on the wire.
STAGE_PAYLOAD = "payload"


@dataclass(frozen=True)
class StageMessage:
    """One protocol stage's opaque payload, to a site or back from it.

    Parameters
    ----------
    stage
        The stage name (for example ``"secagg/masked"``).
    rnd
        The round the stage belongs to.
    payload
        The bytes; only the protocol's own code reads them.
    """

    stage: str
    rnd: int
    payload: bytes


Reply = ClientUpdate | EvaluateResult | ClientError | StageMessage


def value_to_wire(value: HParamValue) -> pb.Value:
    """One hyperparameter value as a wire ``Value``."""
    if isinstance(value, bool):
        raise RefusalError(WireError.BAD_FRAME, "booleans are not hyperparameter values")
    if isinstance(value, int):
        return pb.Value(integer=value)
    if isinstance(value, float):
        return pb.Value(real=value)
    return pb.Value(text=str(value))


def value_from_wire(value: pb.Value) -> HParamValue:
    """A wire ``Value`` back as a Python value."""
    kind = value.WhichOneof("kind")
    if kind == "integer":
        return int(value.integer)
    if kind == "real":
        return float(value.real)
    if kind == "text":
        return str(value.text)
    raise RefusalError(WireError.BAD_FRAME, "a hyperparameter has no value")


def hparams_to_wire(
    target: MutableMapping[str, pb.Value], hparams: Mapping[str, HParamValue]
) -> None:
    """Copy ``hparams`` into a wire map field."""
    for key, value in sorted(hparams.items()):
        target[key].CopyFrom(value_to_wire(value))


def hparams_from_wire(source: Mapping[str, pb.Value]) -> dict[str, HParamValue]:
    """A wire map field back as hyperparameters."""
    return {key: value_from_wire(source[key]) for key in sorted(source)}


def _specs(params: Params) -> tuple[list[pb.TensorSpec], list[np.ndarray]]:
    names = sorted(params)
    return [spec_of(n, params[n]) for n in names], [params[n] for n in names]


def audit_label(kind: str, header: pb.Instruction | pb.Reply) -> str:
    """The audit log's message type: ``Instruction:train``, ``Reply``, ``Reply:staged:STAGE``..."""
    body = header.WhichOneof("body")
    if body == "staged":
        return f"{kind}:staged:{header.staged.stage[:100]}"
    return f"{kind}:{body}" if kind == "Instruction" else kind


def tensor_specs(header: pb.Instruction | pb.Reply) -> list[pb.TensorSpec]:
    """Every tensor spec of a header, in the order their bytes travel."""
    if header.WhichOneof("body") == "staged":
        return [pb.TensorSpec(name=STAGE_PAYLOAD, dtype="uint8", shape=[header.payload_bytes])]
    if isinstance(header, pb.Instruction):
        kind = header.WhichOneof("body")
        if kind == "train":
            return [*header.train.params, *header.train.extras]
        if kind == "evaluate":
            return list(header.evaluate.params)
        return []
    if header.WhichOneof("body") == "update":
        return [*header.update.params, *header.update.extras]
    return []


def encode_train(
    ticket: str, instruction: TrainInstruction
) -> tuple[pb.Instruction, list[np.ndarray]]:
    """A training instruction's header and arrays."""
    p_specs, p_arrays = _specs(instruction.params)
    e_specs, e_arrays = _specs(instruction.extras)
    body = pb.TrainInstruction(round=instruction.rnd, params=p_specs, extras=e_specs)
    hparams_to_wire(body.hparams, instruction.hparams)
    arrays = p_arrays + e_arrays
    header = pb.Instruction(
        ticket=ticket, train=body, payload_bytes=sum(int(a.nbytes) for a in arrays)
    )
    return header, arrays


def encode_evaluate(
    ticket: str, instruction: EvaluateInstruction
) -> tuple[pb.Instruction, list[np.ndarray]]:
    """An evaluation request's header and arrays."""
    specs, arrays = _specs(instruction.params)
    body = pb.EvaluateInstruction(
        round=instruction.rnd,
        split=instruction.split,
        personal=instruction.personal,
        ci_resamples=instruction.ci_resamples,
        ci_seed=instruction.ci_seed,
        params=specs,
    )
    hparams_to_wire(body.hparams, instruction.hparams)
    header = pb.Instruction(
        ticket=ticket, evaluate=body, payload_bytes=sum(int(a.nbytes) for a in arrays)
    )
    return header, arrays


def encode_stage(ticket: str, message: StageMessage) -> tuple[pb.Instruction, list[np.ndarray]]:
    """A protocol stage's header and its payload as one ``uint8`` array."""
    payload = np.frombuffer(message.payload, dtype=np.uint8)
    header = pb.Instruction(
        ticket=ticket,
        staged=pb.StagedMessage(stage=message.stage, round=message.rnd),
        payload_bytes=int(payload.nbytes),
    )
    return header, [payload]


def _stage_message(
    header: pb.StagedMessage, tensors: Sequence[tuple[str, np.ndarray]]
) -> StageMessage:
    if header.payload or len(tensors) != 1 or tensors[0][0] != STAGE_PAYLOAD:
        raise RefusalError(WireError.BAD_FRAME, "a stage's payload must follow in data frames")
    return StageMessage(stage=header.stage, rnd=int(header.round), payload=tensors[0][1].tobytes())


def _split(tensors: Sequence[tuple[str, np.ndarray]], first: int) -> tuple[Params, Params]:
    return dict(tensors[:first]), dict(tensors[first:])


def decode_instruction(
    header: pb.Instruction, tensors: Sequence[tuple[str, np.ndarray]]
) -> TrainInstruction | EvaluateInstruction | StageMessage:
    """A received instruction (train, evaluate or a protocol stage) as a core message."""
    kind = header.WhichOneof("body")
    if kind == "staged":
        return _stage_message(header.staged, tensors)
    if kind == "train":
        params, extras = _split(tensors, len(header.train.params))
        return TrainInstruction(
            rnd=header.train.round,
            params=params,
            hparams=hparams_from_wire(header.train.hparams),
            extras=extras,
        )
    if kind == "evaluate":
        e = header.evaluate
        return EvaluateInstruction(
            rnd=e.round,
            params=dict(tensors),
            split=e.split,
            personal=e.personal,
            hparams=hparams_from_wire(e.hparams),
            ci_resamples=e.ci_resamples,
            ci_seed=e.ci_seed,
        )
    raise RefusalError(WireError.BAD_FRAME, f"instruction of kind '{kind}' carries no message")


def encode_reply(ticket: str, reply: Reply) -> tuple[pb.Reply, list[np.ndarray]]:
    """A site's reply (update, evaluation result or error) as a header and arrays."""
    if isinstance(reply, StageMessage):
        payload = np.frombuffer(reply.payload, dtype=np.uint8)
        staged = pb.StagedMessage(stage=reply.stage, round=reply.rnd)
        return pb.Reply(ticket=ticket, staged=staged, payload_bytes=int(payload.nbytes)), [payload]
    if isinstance(reply, ClientError):
        return pb.Reply(
            ticket=ticket, error=pb.SiteError(code=reply.code, message=reply.message)
        ), []
    if isinstance(reply, EvaluateResult):
        result = pb.EvaluateResult(
            split=reply.split, num_examples=reply.num_examples, metrics=dict(reply.metrics)
        )
        for key, (low, high) in sorted(reply.ci.items()):
            result.ci[key].CopyFrom(pb.Interval(low=low, high=high))
        return pb.Reply(ticket=ticket, result=result), []
    p_specs, p_arrays = _specs(reply.params)
    e_specs, e_arrays = _specs(reply.extras)
    update = pb.ClientUpdate(
        kind=reply.kind,
        num_examples=reply.num_examples,
        num_steps=reply.num_steps,
        metrics={k: float(v) for k, v in reply.metrics.items()},
        params=p_specs,
        extras=e_specs,
    )
    arrays = p_arrays + e_arrays
    return (
        pb.Reply(ticket=ticket, update=update, payload_bytes=sum(int(a.nbytes) for a in arrays)),
        arrays,
    )


def decode_reply(site: str, header: pb.Reply, tensors: Sequence[tuple[str, np.ndarray]]) -> Reply:
    """A received reply as a core message; ``site`` is the caller's certified identity."""
    kind = header.WhichOneof("body")
    if kind == "staged":
        return _stage_message(header.staged, tensors)
    if kind == "error":
        try:
            code = ErrorCode(header.error.code)
        except ValueError:
            code = ErrorCode.INTERNAL
        return ClientError(site=site, code=code, message=header.error.message[:500])
    if kind == "result":
        r = header.result
        return EvaluateResult(
            site=site,
            split=r.split,
            num_examples=int(r.num_examples),
            metrics=dict(r.metrics),
            ci={k: (v.low, v.high) for k, v in r.ci.items()},
        )
    if kind == "update":
        u = header.update
        try:
            update_kind = UpdateKind(u.kind)
        except ValueError:
            raise RefusalError(WireError.BAD_FRAME, f"unknown update kind '{u.kind}'") from None
        params, extras = _split(tensors, len(u.params))
        return ClientUpdate(
            site=site,
            params=params,
            kind=update_kind,
            num_examples=int(u.num_examples),
            num_steps=int(u.num_steps),
            metrics={k: float(v) for k, v in u.metrics.items()},
            extras=extras,
        )
    raise RefusalError(WireError.BAD_FRAME, "a reply carries no message")
