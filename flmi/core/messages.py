"""The messages a server and a site exchange, and nothing else.

These are the only objects that cross the boundary of a hospital. Every
runtime (in-process, processes, gRPC) moves exactly these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from flmi.core.params import Params, nbytes

HParamValue = float | int | str


class UpdateKind(StrEnum):
    """Whether an update carries full weights or the change from the global weights."""

    FULL = "full"
    DELTA = "delta"


class ErrorCode(StrEnum):
    """Why a site could not answer. Codes, never paths or patient data, leave a site."""

    DATA_ERROR = "data_error"
    HPARAM_REFUSED = "hparam_refused"
    SCHEMA_MISMATCH = "schema_mismatch"
    NON_FINITE_UPDATE = "non_finite_update"
    TRAINING_FAILED = "training_failed"
    TIMEOUT = "timeout"
    UNAVAILABLE = "unavailable"
    REJECTED_BY_SERVER = "rejected_by_server"
    UPDATE_OUT_OF_RANGE = "update_out_of_range"
    PROTOCOL_ERROR = "protocol_error"
    INTERNAL = "internal"


@dataclass(frozen=True)
class TrainInstruction:
    """What the server sends a site for one round of local training.

    Parameters
    ----------
    rnd
        The round, counted from 1.
    params
        The global model's float tensors.
    hparams
        Local-training settings (see :class:`flmi.core.keys.HParam`); the site
        checks each against the bounds it allows.
    extras
        Named extra tensors an algorithm needs (for example SCAFFOLD's server
        control variate).
    """

    rnd: int
    params: Params
    hparams: Mapping[str, HParamValue]
    extras: Params = field(default_factory=dict)

    def payload_bytes(self) -> int:
        """Bytes of tensor payload this instruction carries."""
        return nbytes(self.params) + nbytes(self.extras)


@dataclass(frozen=True)
class ClientUpdate:
    """What a site sends back after local training, and nothing else."""

    site: str
    params: Params
    kind: UpdateKind
    num_examples: int
    num_steps: int
    metrics: Mapping[str, float]
    extras: Params = field(default_factory=dict)

    def payload_bytes(self) -> int:
        """Bytes of tensor payload this update carries."""
        return nbytes(self.params) + nbytes(self.extras)


@dataclass(frozen=True)
class EvaluateInstruction:
    """Ask a site to score the given weights on one of its own splits.

    With ``personal`` the site first puts back the tensors it keeps local
    (FedBN's normalisation layers, say), so it scores its own personalised model.
    With ``hparams[finetune_epochs] > 0`` it first fine-tunes the weights on its
    own training split with those settings (local fine-tuning after federation).
    With ``ci_resamples > 0`` it also returns bootstrap 95 % intervals.
    """

    rnd: int
    params: Params
    split: str
    personal: bool = False
    hparams: Mapping[str, HParamValue] = field(default_factory=dict)
    ci_resamples: int = 0
    ci_seed: int = 0

    def payload_bytes(self) -> int:
        """Bytes of tensor payload this instruction carries."""
        return nbytes(self.params)


@dataclass(frozen=True)
class EvaluateResult:
    """Aggregate metrics of one site on one of its splits; no predictions, no data."""

    site: str
    split: str
    num_examples: int
    metrics: Mapping[str, float]
    ci: Mapping[str, tuple[float, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class ClientError:
    """A site's failure, as data. The message never holds a path, a file name or patient data."""

    site: str
    code: ErrorCode
    message: str


TrainReply = ClientUpdate | ClientError
EvaluateReply = EvaluateResult | ClientError
