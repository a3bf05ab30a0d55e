"""What a task is: a model builder, a local training step and an evaluation."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from flmi.core.keys import (
    ClientAlgorithm,
    HParam,
    KeepLocal,
    Personal,
    PseudoLabelSelection,
    PseudoLabelTeacher,
    SemiSupervised,
)
from flmi.core.messages import HParamValue, ScoreHistogram
from flmi.data.arrays import ArraySplit

OPTIMIZERS = ("sgd", "adam")


class HParamError(ValueError):
    """A hyperparameter a site will not run with; the message names it."""


@dataclass(frozen=True)
class LocalTraining:
    """Local-training settings, as a site reads them from an instruction.

    Parameters
    ----------
    lr
        Client learning rate.
    local_epochs
        Passes over the site's training split (ignored when ``local_steps`` is set).
    local_steps
        Exact number of optimiser steps, cycling over epochs; ``0`` means "use epochs".
    batch_size
        Examples per step.
    optimizer
        ``"sgd"`` or ``"adam"``.
    momentum
        SGD momentum.
    weight_decay
        L2 penalty.
    prox_mu
        FedProx's proximal coefficient (0: none).
    client_algorithm
        ``"standard"``, or the name of a registered client algorithm that
        shapes local training (``"scaffold"``, ``"ifca"``, ``"feddyn"``,
        ``"moon"``; see :mod:`flmi.site.algorithms`), which checks its own
        settings.
    keep_local
        ``"none"``; ``"norm"``: normalisation layers stay at the site (FedBN);
        ``"head"``: the last layer stays at the site (``cusfl``).
    personal
        ``"none"``, or ``"ditto"``: the site also trains its own personal model.
    ditto_lambda
        Ditto's pull of the personal model toward the global one.
    semi_supervised
        ``"none"``, ``"fixmatch"`` or ``"pseudo_label"``: how a site with
        unlabeled training images learns from them (see
        :mod:`flmi.tasks.semisup`).
    pseudo_label_threshold
        Confidence a prediction needs to become a pseudo-label.
    unlabeled_loss_weight
        Weight of the unlabeled loss beside the supervised one (FixMatch's lambda).
    pseudo_label_teacher
        ``"local"``: the model being trained predicts its own pseudo-labels;
        ``"global"``: a frozen copy of the received global model does.
    distribution_alignment
        Divide the teacher's class probabilities by their mean over the site's
        unlabeled images (and renormalise) before thresholding, so the
        pseudo-labels are not drawn mostly from the majority class.
    soft_pseudo_labels
        Train toward the teacher's whole (aligned) class distribution instead
        of its top class, on the images that pass the threshold.
    pseudo_label_selection
        ``"threshold"``: every image whose (aligned) top probability reaches
        ``pseudo_label_threshold``; ``"class_quota"``: once a round, per
        class, the most confident images of that class, the numbers set by
        ``pseudo_label_quota`` and the teacher's class prior (see
        :func:`flmi.tasks.semisup.class_quota_selection`).
    pseudo_label_quota
        With ``"class_quota"``: the share of the site's unlabeled images that
        get a pseudo-label each round, in (0, 1].
    freeze
        ``state_dict`` name prefixes (module paths) of tensors that are not
        trained: their values after local training are the received ones.
    """

    lr: float
    local_epochs: int
    local_steps: int
    batch_size: int
    optimizer: str
    momentum: float
    weight_decay: float
    prox_mu: float = 0.0
    client_algorithm: str = ClientAlgorithm.STANDARD
    keep_local: str = KeepLocal.NONE
    personal: str = Personal.NONE
    ditto_lambda: float = 0.0
    semi_supervised: str = SemiSupervised.NONE
    pseudo_label_threshold: float = 0.95
    unlabeled_loss_weight: float = 1.0
    pseudo_label_teacher: str = PseudoLabelTeacher.LOCAL
    distribution_alignment: bool = False
    soft_pseudo_labels: bool = False
    pseudo_label_selection: str = PseudoLabelSelection.THRESHOLD
    pseudo_label_quota: float = 0.5
    freeze: tuple[str, ...] = ()

    @classmethod
    def from_hparams(cls, hparams: Mapping[str, HParamValue]) -> LocalTraining:
        """Parse and sanity-check an instruction's hyperparameters.

        Besides flmi's own keys (:class:`flmi.core.keys.HParam`), an
        instruction may carry keys ``"<algorithm>.<key>"`` for the client
        algorithm it names in ``client_algorithm`` (a plug-in's own settings,
        read and checked by that algorithm); any other key is refused.
        """
        named = str(hparams.get(HParam.CLIENT_ALGORITHM, ClientAlgorithm.STANDARD))
        known = {h.value for h in HParam}
        unknown = sorted(k for k in set(hparams) - known if not k.startswith(f"{named}."))
        if unknown:
            owner, dot, _ = unknown[0].partition(".")
            if dot:
                raise HParamError(
                    f"hyperparameter '{unknown[0]}' belongs to client algorithm '{owner}', "
                    f"but this round's client_algorithm is '{named}'"
                )
            raise HParamError(f"unknown hyperparameter '{unknown[0]}'")
        try:
            training = cls(
                lr=float(hparams[HParam.LR]),
                local_epochs=int(hparams.get(HParam.LOCAL_EPOCHS, 1)),
                local_steps=int(hparams.get(HParam.LOCAL_STEPS, 0)),
                batch_size=int(hparams[HParam.BATCH_SIZE]),
                optimizer=str(hparams.get(HParam.OPTIMIZER, "sgd")),
                momentum=float(hparams.get(HParam.MOMENTUM, 0.0)),
                weight_decay=float(hparams.get(HParam.WEIGHT_DECAY, 0.0)),
                prox_mu=float(hparams.get(HParam.PROX_MU, 0.0)),
                client_algorithm=named,
                keep_local=str(hparams.get(HParam.KEEP_LOCAL, KeepLocal.NONE)),
                personal=str(hparams.get(HParam.PERSONAL, Personal.NONE)),
                ditto_lambda=float(hparams.get(HParam.DITTO_LAMBDA, 0.0)),
                semi_supervised=str(hparams.get(HParam.SEMI_SUPERVISED, SemiSupervised.NONE)),
                pseudo_label_threshold=float(hparams.get(HParam.PSEUDO_LABEL_THRESHOLD, 0.95)),
                unlabeled_loss_weight=float(hparams.get(HParam.UNLABELED_LOSS_WEIGHT, 1.0)),
                pseudo_label_teacher=str(
                    hparams.get(HParam.PSEUDO_LABEL_TEACHER, PseudoLabelTeacher.LOCAL)
                ),
                distribution_alignment=bool(int(hparams.get(HParam.DISTRIBUTION_ALIGNMENT, 0))),
                soft_pseudo_labels=bool(int(hparams.get(HParam.SOFT_PSEUDO_LABELS, 0))),
                pseudo_label_selection=str(
                    hparams.get(HParam.PSEUDO_LABEL_SELECTION, PseudoLabelSelection.THRESHOLD)
                ),
                pseudo_label_quota=float(hparams.get(HParam.PSEUDO_LABEL_QUOTA, 0.5)),
                freeze=split_prefixes(str(hparams.get(HParam.FREEZE, ""))),
            )
        except KeyError as exc:
            raise HParamError(f"hyperparameter {exc.args[0]!r} is missing") from None
        except (TypeError, ValueError) as exc:
            raise HParamError(f"hyperparameter has the wrong type: {exc}") from None
        training.check()
        return training

    def check(self) -> None:
        """Refuse values no training could use."""
        if not self.lr > 0:
            raise HParamError(f"lr must be positive, got {self.lr}")
        if self.local_epochs < 1 and self.local_steps < 1:
            raise HParamError("local_epochs or local_steps must be at least 1")
        if self.local_steps < 0:
            raise HParamError(f"local_steps must not be negative, got {self.local_steps}")
        if self.batch_size < 1:
            raise HParamError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.optimizer not in OPTIMIZERS:
            raise HParamError(
                f"optimizer must be one of {list(OPTIMIZERS)}, got '{self.optimizer}'"
            )
        if not 0.0 <= self.momentum < 1.0:
            raise HParamError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.prox_mu < 0:
            raise HParamError(f"prox_mu must not be negative, got {self.prox_mu}")
        if self.keep_local not in [k.value for k in KeepLocal]:
            raise HParamError(
                f"keep_local must be one of {[k.value for k in KeepLocal]}, got '{self.keep_local}'"
            )
        if self.personal not in [p.value for p in Personal]:
            raise HParamError(
                f"personal must be one of {[p.value for p in Personal]}, got '{self.personal}'"
            )
        if self.ditto_lambda < 0:
            raise HParamError(f"ditto_lambda must not be negative, got {self.ditto_lambda}")
        if self.weight_decay < 0:
            raise HParamError(f"weight_decay must not be negative, got {self.weight_decay}")
        methods = [m.value for m in SemiSupervised]
        if self.semi_supervised not in methods:
            raise HParamError(
                f"semi_supervised must be one of {methods}, got '{self.semi_supervised}'"
            )
        if not 0.0 <= self.pseudo_label_threshold <= 1.0:
            raise HParamError(
                f"pseudo_label_threshold must be in [0, 1], got {self.pseudo_label_threshold}"
            )
        if not self.unlabeled_loss_weight >= 0:
            raise HParamError(
                f"unlabeled_loss_weight must not be negative, got {self.unlabeled_loss_weight}"
            )
        teachers = [t.value for t in PseudoLabelTeacher]
        if self.pseudo_label_teacher not in teachers:
            raise HParamError(
                f"pseudo_label_teacher must be one of {teachers}, got '{self.pseudo_label_teacher}'"
            )
        selections = [m.value for m in PseudoLabelSelection]
        if self.pseudo_label_selection not in selections:
            raise HParamError(
                f"pseudo_label_selection must be one of {selections}, "
                f"got '{self.pseudo_label_selection}'"
            )
        if not 0.0 < self.pseudo_label_quota <= 1.0:
            raise HParamError(
                f"pseudo_label_quota must be in (0, 1], got {self.pseudo_label_quota}"
            )

    def make_optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        """A fresh optimiser for one round of local training (frozen tensors left out)."""
        params = [p for p in model.parameters() if p.requires_grad]
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        return torch.optim.SGD(
            params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
        )


def split_prefixes(text: str) -> tuple[str, ...]:
    """``"a.b,c"`` -> ``("a.b", "c")``: the wire form of a list of name prefixes."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def join_prefixes(prefixes: Sequence[str]) -> str:
    """The wire form of name prefixes: comma-separated, in the given order."""
    return ",".join(prefixes)


def matches_prefix(name: str, prefixes: Sequence[str]) -> bool:
    """Whether ``name`` is one of ``prefixes`` or lies inside one (module-path semantics).

    ``"features.0"`` matches ``"features.0.weight"`` but not ``"features.03.weight"``.
    """
    for prefix in prefixes:
        stem = prefix if prefix.endswith(".") else prefix + "."
        if name == prefix or name.startswith(stem):
            return True
    return False


class PrivateSession(Protocol):
    """One round of private local training: the module to run, its optimiser, its batches."""

    @property
    def module(self) -> torch.nn.Module:
        """What the loop runs forward (the model, with per-example gradient hooks)."""
        ...

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The optimiser that clips, noises and steps."""
        ...

    def batches(self) -> Iterator[torch.Tensor]:
        """Index batches to train on (they may be empty: each step still adds noise)."""
        ...

    def close(self) -> None:
        """Leave the model as it was before, apart from its trained weights."""
        ...


class PrivateTraining(Protocol):
    """A way of making one round of local training differentially private (DP-SGD)."""

    def start(
        self,
        *,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        num_examples: int,
        training: LocalTraining,
        generator: torch.Generator,
    ) -> PrivateSession:
        """Wrap ``model`` and ``optimizer`` for one round on ``num_examples`` examples."""
        ...


@dataclass(frozen=True)
class FitHooks:
    """Ways an algorithm changes local training, set by the site from the instruction.

    Parameters
    ----------
    penalty
        A term added to each batch's loss (FedProx's proximal term).
    before_step
        Called after backward and before each optimiser step (SCAFFOLD's
        gradient correction).
    private
        DP-SGD: the loop trains through the session it starts (per-example
        clipping and noise, Poisson-sampled batches).
    """

    penalty: Callable[[torch.nn.Module], torch.Tensor] | None = None
    before_step: Callable[[torch.nn.Module], None] | None = None
    private: PrivateTraining | None = None


@dataclass(frozen=True)
class FitResult:
    """What local training reports: steps taken and aggregate training metrics."""

    num_steps: int
    metrics: dict[str, float]


class Task(Protocol):
    """A medical task: how to build its model, train it locally and score it.

    ``in_channels`` (image channels, or features of a table) and
    ``spatial_dims`` (2, 3, or 0 for tables) describe the input the model takes.
    """

    in_channels: int
    spatial_dims: int

    @property
    def name(self) -> str:
        """The task's config name."""
        ...

    def build_model(self, *, seed: int) -> torch.nn.Module:
        """A freshly initialised model (seeded)."""
        ...

    def fit(
        self,
        *,
        model: torch.nn.Module,
        data: ArraySplit,
        training: LocalTraining,
        generator: torch.Generator,
        device: torch.device,
        hooks: FitHooks | None = None,
    ) -> FitResult:
        """Train ``model`` in place on ``data``."""
        ...

    def evaluate(
        self, *, model: torch.nn.Module, data: ArraySplit, device: torch.device
    ) -> dict[str, float]:
        """Aggregate metrics of ``model`` on ``data``."""
        ...

    def confidence_intervals(
        self,
        *,
        model: torch.nn.Module,
        data: ArraySplit,
        device: torch.device,
        resamples: int,
        seed: int,
    ) -> dict[str, tuple[float, float]]:
        """Bootstrap 95 % intervals of :meth:`evaluate`'s metrics on ``data``."""
        ...

    def score_histogram(
        self, *, model: torch.nn.Module, data: ArraySplit, device: torch.device, bins: int
    ) -> ScoreHistogram | None:
        """Counts per predicted-probability bin, for ROC curves and calibration."""
        ...

    def check_labels(self, *, data: ArraySplit, where: str) -> None:
        """Raise :class:`flmi.core.errors.LabelError` if a label lies outside the task."""
        ...


@runtime_checkable
class CountsRateCells(Protocol):
    """A task whose rates (sensitivity, accuracy, ...) are fractions of confusion counts."""

    def rate_cells(
        self, *, model: torch.nn.Module, data: ArraySplit, device: torch.device
    ) -> Mapping[str, tuple[int, ...]]:
        """``{metric: the counts it determines}`` on ``data``."""
        ...


class NoScoreHistogram:
    """For tasks with no single positive class (regression, survival, segmentation,
    multi-label): sites send no score histogram, so the report draws no ROC curve."""

    def score_histogram(
        self, *, model: torch.nn.Module, data: ArraySplit, device: torch.device, bins: int
    ) -> ScoreHistogram | None:
        """None: there is no positive-class probability to bin."""
        return None
