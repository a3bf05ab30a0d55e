from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TensorSpec(_message.Message):
    __slots__ = ("name", "dtype", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class Value(_message.Message):
    __slots__ = ("real", "integer", "text")
    REAL_FIELD_NUMBER: _ClassVar[int]
    INTEGER_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    real: float
    integer: int
    text: str
    def __init__(self, real: _Optional[float] = ..., integer: _Optional[int] = ..., text: _Optional[str] = ...) -> None: ...

class RegisterRequest(_message.Message):
    __slots__ = ("protocol_version", "task", "schema_sha256", "schema", "capabilities")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_SHA256_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    task: str
    schema_sha256: str
    schema: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, protocol_version: _Optional[int] = ..., task: _Optional[str] = ..., schema_sha256: _Optional[str] = ..., schema: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., capabilities: _Optional[_Iterable[str]] = ...) -> None: ...

class TrainingPlan(_message.Message):
    __slots__ = ("task", "strategy", "hparams", "rounds", "aggregation")
    class HparamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...
    TASK_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    HPARAMS_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    AGGREGATION_FIELD_NUMBER: _ClassVar[int]
    task: str
    strategy: str
    hparams: _containers.MessageMap[str, Value]
    rounds: int
    aggregation: AggregationPlan
    def __init__(self, task: _Optional[str] = ..., strategy: _Optional[str] = ..., hparams: _Optional[_Mapping[str, Value]] = ..., rounds: _Optional[int] = ..., aggregation: _Optional[_Union[AggregationPlan, _Mapping]] = ...) -> None: ...

class AggregationPlan(_message.Message):
    __slots__ = ("aggregation", "he_poly_modulus_degree", "he_scale_bits")
    AGGREGATION_FIELD_NUMBER: _ClassVar[int]
    HE_POLY_MODULUS_DEGREE_FIELD_NUMBER: _ClassVar[int]
    HE_SCALE_BITS_FIELD_NUMBER: _ClassVar[int]
    aggregation: str
    he_poly_modulus_degree: int
    he_scale_bits: int
    def __init__(self, aggregation: _Optional[str] = ..., he_poly_modulus_degree: _Optional[int] = ..., he_scale_bits: _Optional[int] = ...) -> None: ...

class RegisterReply(_message.Message):
    __slots__ = ("plan", "completed_round", "chunk_bytes", "max_message_bytes", "heartbeat_s")
    PLAN_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_ROUND_FIELD_NUMBER: _ClassVar[int]
    CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_S_FIELD_NUMBER: _ClassVar[int]
    plan: TrainingPlan
    completed_round: int
    chunk_bytes: int
    max_message_bytes: int
    heartbeat_s: float
    def __init__(self, plan: _Optional[_Union[TrainingPlan, _Mapping]] = ..., completed_round: _Optional[int] = ..., chunk_bytes: _Optional[int] = ..., max_message_bytes: _Optional[int] = ..., heartbeat_s: _Optional[float] = ...) -> None: ...

class TrainInstruction(_message.Message):
    __slots__ = ("round", "hparams", "params", "extras")
    class HparamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...
    ROUND_FIELD_NUMBER: _ClassVar[int]
    HPARAMS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    EXTRAS_FIELD_NUMBER: _ClassVar[int]
    round: int
    hparams: _containers.MessageMap[str, Value]
    params: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    extras: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    def __init__(self, round: _Optional[int] = ..., hparams: _Optional[_Mapping[str, Value]] = ..., params: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., extras: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ...) -> None: ...

class EvaluateInstruction(_message.Message):
    __slots__ = ("round", "split", "personal", "hparams", "ci_resamples", "ci_seed", "params")
    class HparamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    PERSONAL_FIELD_NUMBER: _ClassVar[int]
    HPARAMS_FIELD_NUMBER: _ClassVar[int]
    CI_RESAMPLES_FIELD_NUMBER: _ClassVar[int]
    CI_SEED_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    round: int
    split: str
    personal: bool
    hparams: _containers.MessageMap[str, Value]
    ci_resamples: int
    ci_seed: int
    params: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    def __init__(self, round: _Optional[int] = ..., split: _Optional[str] = ..., personal: _Optional[bool] = ..., hparams: _Optional[_Mapping[str, Value]] = ..., ci_resamples: _Optional[int] = ..., ci_seed: _Optional[int] = ..., params: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ...) -> None: ...

class Wait(_message.Message):
    __slots__ = ("retry_after_s",)
    RETRY_AFTER_S_FIELD_NUMBER: _ClassVar[int]
    retry_after_s: float
    def __init__(self, retry_after_s: _Optional[float] = ...) -> None: ...

class Finish(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class Instruction(_message.Message):
    __slots__ = ("ticket", "payload_bytes", "train", "evaluate", "wait", "finish", "staged")
    TICKET_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    TRAIN_FIELD_NUMBER: _ClassVar[int]
    EVALUATE_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    FINISH_FIELD_NUMBER: _ClassVar[int]
    STAGED_FIELD_NUMBER: _ClassVar[int]
    ticket: str
    payload_bytes: int
    train: TrainInstruction
    evaluate: EvaluateInstruction
    wait: Wait
    finish: Finish
    staged: StagedMessage
    def __init__(self, ticket: _Optional[str] = ..., payload_bytes: _Optional[int] = ..., train: _Optional[_Union[TrainInstruction, _Mapping]] = ..., evaluate: _Optional[_Union[EvaluateInstruction, _Mapping]] = ..., wait: _Optional[_Union[Wait, _Mapping]] = ..., finish: _Optional[_Union[Finish, _Mapping]] = ..., staged: _Optional[_Union[StagedMessage, _Mapping]] = ...) -> None: ...

class ClientUpdate(_message.Message):
    __slots__ = ("kind", "num_examples", "num_steps", "metrics", "params", "extras")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    KIND_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    NUM_STEPS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    EXTRAS_FIELD_NUMBER: _ClassVar[int]
    kind: str
    num_examples: int
    num_steps: int
    metrics: _containers.ScalarMap[str, float]
    params: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    extras: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    def __init__(self, kind: _Optional[str] = ..., num_examples: _Optional[int] = ..., num_steps: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ..., params: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., extras: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ...) -> None: ...

class Interval(_message.Message):
    __slots__ = ("low", "high")
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    low: float
    high: float
    def __init__(self, low: _Optional[float] = ..., high: _Optional[float] = ...) -> None: ...

class EvaluateResult(_message.Message):
    __slots__ = ("split", "num_examples", "metrics", "ci")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class CiEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Interval
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Interval, _Mapping]] = ...) -> None: ...
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    CI_FIELD_NUMBER: _ClassVar[int]
    split: str
    num_examples: int
    metrics: _containers.ScalarMap[str, float]
    ci: _containers.MessageMap[str, Interval]
    def __init__(self, split: _Optional[str] = ..., num_examples: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ..., ci: _Optional[_Mapping[str, Interval]] = ...) -> None: ...

class SiteError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class Reply(_message.Message):
    __slots__ = ("ticket", "payload_bytes", "update", "result", "error", "staged")
    TICKET_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STAGED_FIELD_NUMBER: _ClassVar[int]
    ticket: str
    payload_bytes: int
    update: ClientUpdate
    result: EvaluateResult
    error: SiteError
    staged: StagedMessage
    def __init__(self, ticket: _Optional[str] = ..., payload_bytes: _Optional[int] = ..., update: _Optional[_Union[ClientUpdate, _Mapping]] = ..., result: _Optional[_Union[EvaluateResult, _Mapping]] = ..., error: _Optional[_Union[SiteError, _Mapping]] = ..., staged: _Optional[_Union[StagedMessage, _Mapping]] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("instruction", "reply", "data")
    INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    REPLY_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    instruction: Instruction
    reply: Reply
    data: bytes
    def __init__(self, instruction: _Optional[_Union[Instruction, _Mapping]] = ..., reply: _Optional[_Union[Reply, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class FetchRequest(_message.Message):
    __slots__ = ("after_ticket", "wait_s")
    AFTER_TICKET_FIELD_NUMBER: _ClassVar[int]
    WAIT_S_FIELD_NUMBER: _ClassVar[int]
    after_ticket: str
    wait_s: float
    def __init__(self, after_ticket: _Optional[str] = ..., wait_s: _Optional[float] = ...) -> None: ...

class SubmitReply(_message.Message):
    __slots__ = ("ticket",)
    TICKET_FIELD_NUMBER: _ClassVar[int]
    ticket: str
    def __init__(self, ticket: _Optional[str] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("ticket",)
    TICKET_FIELD_NUMBER: _ClassVar[int]
    ticket: str
    def __init__(self, ticket: _Optional[str] = ...) -> None: ...

class HeartbeatReply(_message.Message):
    __slots__ = ("round",)
    ROUND_FIELD_NUMBER: _ClassVar[int]
    round: int
    def __init__(self, round: _Optional[int] = ...) -> None: ...

class DoneRequest(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class DoneReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StagedMessage(_message.Message):
    __slots__ = ("stage", "round", "sender", "recipient", "payload")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    stage: str
    round: int
    sender: str
    recipient: str
    payload: bytes
    def __init__(self, stage: _Optional[str] = ..., round: _Optional[int] = ..., sender: _Optional[str] = ..., recipient: _Optional[str] = ..., payload: _Optional[bytes] = ...) -> None: ...

class StagedRequest(_message.Message):
    __slots__ = ("outgoing", "stage", "round")
    OUTGOING_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    outgoing: _containers.RepeatedCompositeFieldContainer[StagedMessage]
    stage: str
    round: int
    def __init__(self, outgoing: _Optional[_Iterable[_Union[StagedMessage, _Mapping]]] = ..., stage: _Optional[str] = ..., round: _Optional[int] = ...) -> None: ...

class StagedReply(_message.Message):
    __slots__ = ("incoming",)
    INCOMING_FIELD_NUMBER: _ClassVar[int]
    incoming: _containers.RepeatedCompositeFieldContainer[StagedMessage]
    def __init__(self, incoming: _Optional[_Iterable[_Union[StagedMessage, _Mapping]]] = ...) -> None: ...
