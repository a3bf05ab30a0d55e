"""What the built-in tasks share: one fit, one evaluation, one bootstrap of intervals.

A built-in task subclasses :class:`SupervisedTask` and supplies only what
differs between tasks: the training tensors and batch loss, the predictions
a split is scored on, the metric function of those predictions and the
metrics of an empty split. A third-party task need not subclass it: anything
that satisfies :class:`flmi.tasks.base.Task` runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch

from flmi.data.arrays import ArraySplit
from flmi.report.bootstrap import ResampledMetricFn, bootstrap_ci
from flmi.tasks.base import FitHooks, FitResult, LocalTraining
from flmi.tasks.loop import BatchTransform, train_local


class SupervisedTask(ABC):
    """Local training, evaluation and bootstrap intervals from a task's few own parts.

    :meth:`fit` trains on :meth:`training_tensors` with :meth:`training_loss`
    (and :meth:`training_transform`, if any); :meth:`evaluate` applies
    :meth:`metrics` to :meth:`scored`'s targets and predictions, and
    :meth:`confidence_intervals` resamples those same rows (patients or cases)
    with :func:`flmi.report.bootstrap.bootstrap_ci`.
    """

    @abstractmethod
    def training_tensors(self, data: ArraySplit) -> tuple[torch.Tensor, torch.Tensor]:
        """The inputs and targets local training batches are cut from (CPU tensors)."""

    @abstractmethod
    def training_loss(
        self,
        model: torch.nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """The mean loss of one training batch (differentiable); ``generator`` for augmentation."""

    def training_transform(self) -> BatchTransform | None:
        """An augmentation applied to each input batch, or None (the default)."""
        return None

    @abstractmethod
    def scored(
        self, *, model: torch.nn.Module, data: ArraySplit, device: torch.device
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-row targets and predictions of ``model`` on a non-empty ``data``.

        Row ``i`` of both arrays is one patient (or case), the unit the
        bootstrap resamples.
        """

    @abstractmethod
    def metrics(self, targets: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
        """Every metric of :meth:`evaluate` from rows of :meth:`scored`."""

    @abstractmethod
    def empty_metrics(self, data: ArraySplit) -> dict[str, float]:
        """The metrics of a split with no examples (NaN where undefined)."""

    def resampled_metrics(self) -> ResampledMetricFn | None:
        """:meth:`metrics` of many bootstrap resamples at once, or None (the default).

        With None the bootstrap calls :meth:`metrics` once per resample; a
        task that gives one must give the same values.
        """
        return None

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
        """Minimise :meth:`training_loss` over seeded mini-batches (see :func:`train_local`)."""
        x, y = self.training_tensors(data)

        def loss(m: torch.nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            return self.training_loss(m, xb, yb, generator=generator)

        return train_local(
            model=model,
            x=x,
            y=y,
            training=training,
            generator=generator,
            device=device,
            loss_fn=loss,
            transform=self.training_transform(),
            hooks=hooks,
        )

    def evaluate(
        self, *, model: torch.nn.Module, data: ArraySplit, device: torch.device
    ) -> dict[str, float]:
        """Aggregate metrics of ``model`` on ``data``."""
        if len(data) == 0:
            return self.empty_metrics(data)
        targets, predictions = self.scored(model=model, data=data, device=device)
        return self.metrics(targets, predictions)

    def confidence_intervals(
        self,
        *,
        model: torch.nn.Module,
        data: ArraySplit,
        device: torch.device,
        resamples: int,
        seed: int,
    ) -> dict[str, tuple[float, float]]:
        """Percentile bootstrap 95 % intervals of every metric, resampling rows of :meth:`scored`.

        Empty when ``data`` has no examples or ``resamples`` is below 1.
        """
        if len(data) == 0 or resamples < 1:
            return {}
        targets, predictions = self.scored(model=model, data=data, device=device)
        return bootstrap_ci(
            labels=targets,
            scores=predictions,
            metrics=self.metrics,
            resamples=resamples,
            seed=seed,
            resampled=self.resampled_metrics(),
        )
