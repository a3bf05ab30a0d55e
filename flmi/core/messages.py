"""The messages a server and a site exchange, and nothing else.

These are the only objects that cross the boundary of a hospital. Every
runtime (in-process, processes, gRPC) moves exactly these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

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
    With ``ci_resamples > 0`` it also returns bootstrap 95 % intervals. With
    ``histogram_bins > 0`` it also returns a :class:`ScoreHistogram` of that
    many equal bins on ``[0, 1]`` (counts only, never a per-patient score).
    """

    rnd: int
    params: Params
    split: str
    personal: bool = False
    hparams: Mapping[str, HParamValue] = field(default_factory=dict)
    ci_resamples: int = 0
    ci_seed: int = 0
    histogram_bins: int = 0

    def payload_bytes(self) -> int:
        """Bytes of tensor payload this instruction carries."""
        return nbytes(self.params)


@dataclass(frozen=True)
class ScoreHistogram:
    """How many positives and negatives fell in each predicted-probability bin.

    The bins split ``[0, 1]`` into ``len(positives)`` equal parts; a score ``s``
    falls in bin ``min(floor(s * bins), bins - 1)``. The score is the predicted
    probability of ``positive_label`` (one-vs-rest for a multi-class task).

    This is an aggregate, and all a site sends for ROC curves, confusion
    matrices at a threshold and calibration plots: no score, image or
    identifier of any patient. A raw count may be small (even 1) on a small
    split, telling which bin one patient's score fell in together with that
    patient's label, so a site merges such cells before sending
    (:func:`flmi.site.small_cells.merge_small_cells`).

    Parameters
    ----------
    positive_label
        The class whose probability is binned.
    positives
        int64 counts of examples labelled ``positive_label``, one per bin.
    negatives
        int64 counts of every other example, one per bin.
    """

    positive_label: int
    positives: np.ndarray
    negatives: np.ndarray

    def __post_init__(self) -> None:
        if self.positives.shape != self.negatives.shape or self.positives.ndim != 1:
            raise ValueError(
                f"histogram counts must be two 1-D arrays of one length, got shapes "
                f"{self.positives.shape} and {self.negatives.shape}"
            )
        if self.positives.size < 1:
            raise ValueError("a score histogram needs at least one bin")
        if (self.positives < 0).any() or (self.negatives < 0).any():
            raise ValueError("histogram counts must not be negative")

    @property
    def bins(self) -> int:
        """Number of equal bins on ``[0, 1]``."""
        return int(self.positives.size)

    def __add__(self, other: ScoreHistogram) -> ScoreHistogram:
        """The histogram of both splits together (same bins and positive label)."""
        if other.bins != self.bins or other.positive_label != self.positive_label:
            raise ValueError(
                f"cannot add histograms of {self.bins} and {other.bins} bins "
                f"(positive labels {self.positive_label} and {other.positive_label})"
            )
        return ScoreHistogram(
            positive_label=self.positive_label,
            positives=self.positives + other.positives,
            negatives=self.negatives + other.negatives,
        )


@dataclass(frozen=True)
class EvaluateResult:
    """Aggregate metrics of one site on one of its splits; no predictions, no data.

    ``histogram_withheld`` says the site was asked for a score histogram and
    sent none: its positives or negatives on the split number fewer than its
    ``min_count``, so even merged bins would point at single patients.
    """

    site: str
    split: str
    num_examples: int
    metrics: Mapping[str, float]
    ci: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    histogram: ScoreHistogram | None = None
    histogram_withheld: bool = False


@dataclass(frozen=True)
class ClientError:
    """A site's failure, as data. The message never holds a path, a file name or patient data."""

    site: str
    code: ErrorCode
    message: str


TrainReply = ClientUpdate | ClientError
EvaluateReply = EvaluateResult | ClientError
