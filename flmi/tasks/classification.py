"""Image classification: binary and multi-class, 2D and 3D."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from flmi.core.errors import ConfigError, LabelError
from flmi.core.keys import Metric
from flmi.core.messages import ScoreHistogram
from flmi.data.arrays import ArraySplit
from flmi.report.bootstrap import ResampledMetricFn
from flmi.report.curves import score_histogram
from flmi.tasks.augment import random_flip_shift
from flmi.tasks.base import FitHooks, FitResult, LocalTraining
from flmi.tasks.common import SupervisedTask
from flmi.tasks.last_predictions import LastPredictions, weights_key
from flmi.tasks.loop import BatchTransform
from flmi.tasks.metrics import (
    classification_metrics,
    rate_cells,
    resampled_classification_metrics,
)
from flmi.tasks.model_registry import NetworkRequest, build_network, network_for
from flmi.tasks.networks import DenseNetSettings
from flmi.tasks.semisup import train_semi_supervised
from flmi.tasks.torch_params import as_tensor

METRICS = (
    Metric.LOSS,
    Metric.ACCURACY,
    Metric.BALANCED_ACCURACY,
    Metric.AUC,
    Metric.SENSITIVITY,
    Metric.SPECIFICITY,
)


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return random_flip_shift(x, generator=generator)


DTYPES = {"float32": torch.float32, "float64": torch.float64}
EVAL_BATCH = 512


class ClassificationTask(SupervisedTask):
    """Classify whole images into ``num_classes`` classes.

    Parameters
    ----------
    num_classes
        Number of classes; labels must lie in ``0 .. num_classes - 1``.
    in_channels
        Image channels.
    spatial_dims
        2 for images, 3 for volumes.
    positive_label
        The class sensitivity refers to.
    model
        A network of :data:`flmi.tasks.model_registry.MODELS` that serves classification
        (built in: ``"small_cnn"``, ``"densenet121"``, ``"logistic"``).
    width
        Width of the first convolution block.
    augment
        Random flips, rotations and shifts during local training.
    dtype
        ``"float32"`` or ``"float64"`` (the latter for exactness tests).
    densenet
        Size and normalisation of ``model = "densenet121"`` (default: the paper's).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        spatial_dims: int,
        positive_label: int,
        model: str = "small_cnn",
        width: int = 32,
        augment: bool = False,
        dtype: str = "float32",
        densenet: DenseNetSettings | None = None,
    ) -> None:
        if num_classes < 2:
            raise ConfigError(f"task.num_classes must be at least 2, got {num_classes}")
        if not 0 <= positive_label < num_classes:
            raise ConfigError(
                f"task.positive_label = {positive_label} is not a class of a "
                f"{num_classes}-class task; choose one of 0..{num_classes - 1}"
            )
        network_for(model=model, task="classification", spatial_dims=spatial_dims)
        if dtype not in DTYPES:
            raise ConfigError(f"task.dtype must be one of {sorted(DTYPES)}, got '{dtype}'")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.spatial_dims = spatial_dims
        self.positive_label = positive_label
        self.model_name = model
        self.width = width
        self.augment = augment
        self.dtype = DTYPES[dtype]
        self.densenet = densenet if densenet is not None else DenseNetSettings()
        self._last: LastPredictions[tuple[np.ndarray, torch.Tensor]] = LastPredictions()
        self.densenet.check()

    @property
    def name(self) -> str:
        """The config name, ``"classification"``."""
        return "classification"

    def build_model(self, *, seed: int) -> torch.nn.Module:
        """The network initialised from ``seed`` without touching torch's global generator."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_network(
                model=self.model_name,
                task="classification",
                request=NetworkRequest(
                    spatial_dims=self.spatial_dims,
                    in_channels=self.in_channels,
                    out_channels=self.num_classes,
                    width=self.width,
                    norm=self.densenet.norm,
                    init_features=self.densenet.init_features,
                    growth_rate=self.densenet.growth_rate,
                ),
            )
        return model.to(self.dtype)

    def batch_loss(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The mean training loss of ``model`` on one batch (differentiable)."""
        return self._loss(model(x), y)

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if logits.shape[1] == 1:
            return F.binary_cross_entropy_with_logits(logits[:, 0], y.to(logits.dtype))
        return F.cross_entropy(logits, y)

    def _example_losses(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if logits.shape[1] == 1:
            return F.binary_cross_entropy_with_logits(
                logits[:, 0], y.to(logits.dtype), reduction="none"
            )
        return F.cross_entropy(logits, y, reduction="none")

    def _probs(self, logits: torch.Tensor) -> torch.Tensor:
        if logits.shape[1] == 1:
            p = torch.sigmoid(logits[:, 0])
            return torch.stack([1 - p, p], dim=1)
        return torch.softmax(logits, dim=1)

    def check_labels(self, *, data: ArraySplit, where: str) -> None:
        """Every label must be one of the task's classes."""
        if len(data) == 0:
            return
        low, high = int(data.y.min()), int(data.y.max())
        if low < 0 or high >= self.num_classes:
            bad = low if low < 0 else high
            raise LabelError(
                f"{where}: label {bad} is outside the task's classes 0..{self.num_classes - 1}; "
                "set [task] num_classes to cover every label, or fix the labels"
            )

    def training_tensors(self, data: ArraySplit) -> tuple[torch.Tensor, torch.Tensor]:
        """Images in the task's dtype and class labels."""
        return as_tensor(data.x, self.dtype), torch.from_numpy(data.y)

    def training_loss(
        self,
        model: torch.nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """Cross-entropy (binary with one logit) of one batch."""
        return self._loss(model(x), y)

    def training_transform(self) -> BatchTransform | None:
        """Random flips and shifts with ``augment``."""
        return _augment if self.augment else None

    def fit_semi_supervised(
        self,
        *,
        model: torch.nn.Module,
        labeled: ArraySplit,
        unlabeled: np.ndarray,
        training: LocalTraining,
        generator: torch.Generator,
        device: torch.device,
        hooks: FitHooks | None = None,
    ) -> FitResult:
        """Cross-entropy on labeled batches plus FixMatch or pseudo-label loss on unlabeled ones.

        See :func:`flmi.tasks.semisup.train_semi_supervised`. Labeled batches
        are augmented as in :meth:`fit` (``augment``); unlabeled images always
        get the weak (and, for FixMatch, the strong) view.
        """
        return train_semi_supervised(
            model=model,
            x=as_tensor(labeled.x, self.dtype),
            y=torch.from_numpy(labeled.y),
            unlabeled=as_tensor(unlabeled, self.dtype),
            training=training,
            generator=generator,
            device=device,
            loss_fn=self._example_losses,
            probs_fn=self._probs,
            transform=_augment if self.augment else None,
            hooks=hooks,
        )

    @torch.no_grad()
    def predict_proba(
        self, *, model: torch.nn.Module, x: np.ndarray, device: torch.device
    ) -> tuple[np.ndarray, torch.Tensor]:
        """Class probabilities ``(N, C)`` (read-only) and the logits, in evaluation mode.

        A second call for the same model, weights and input array gives back
        the first call's arrays (metrics, intervals and histogram of one split
        share one forward pass).
        """
        model.eval()
        weights = weights_key(model)
        known = self._last.get(model=model, x=x, device=device, weights=weights)
        if known is not None:
            return known
        probs, logits = self._forward(model=model, x=x, device=device)
        probs.setflags(write=False)
        self._last.put(model=model, x=x, device=device, weights=weights, value=(probs, logits))
        return probs, logits

    def _forward(
        self, *, model: torch.nn.Module, x: np.ndarray, device: torch.device
    ) -> tuple[np.ndarray, torch.Tensor]:
        logits = [
            model(as_tensor(x[i : i + EVAL_BATCH], self.dtype).to(device)).float().cpu()
            for i in range(0, x.shape[0], EVAL_BATCH)
        ]
        # No examples: no logits (a binary network with one logit reads the same through _probs).
        out = torch.cat(logits) if logits else torch.zeros(0, self.num_classes)
        return self._probs(out).numpy(), out

    def scored(
        self, *, model: torch.nn.Module, data: ArraySplit, device: torch.device
    ) -> tuple[np.ndarray, np.ndarray]:
        """Labels and class probabilities ``(N, C)``."""
        return data.y, self.predict_proba(model=model, x=data.x, device=device)[0]

    def metrics(self, targets: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
        """Every metric from labels and probabilities, the loss from the probabilities."""
        picked = np.clip(predictions[np.arange(targets.shape[0]), targets], 1e-12, 1.0)
        return classification_metrics(
            labels=targets,
            probs=predictions,
            loss=float(-np.log(picked).mean()),
            positive_label=self.positive_label,
        )

    def empty_metrics(self, data: ArraySplit) -> dict[str, float]:
        """NaN for every metric."""
        return {m.value: float("nan") for m in METRICS}

    def resampled_metrics(self) -> ResampledMetricFn:
        """:meth:`metrics` of every bootstrap resample in one numpy pass."""

        def resampled(
            targets: np.ndarray, predictions: np.ndarray, index: np.ndarray
        ) -> dict[str, np.ndarray]:
            return resampled_classification_metrics(
                labels=targets, probs=predictions, index=index, positive_label=self.positive_label
            )

        return resampled

    def score_histogram(
        self, *, model: torch.nn.Module, data: ArraySplit, device: torch.device, bins: int
    ) -> ScoreHistogram:
        """Positives and negatives per bin of the predicted probability of ``positive_label``.

        One-vs-rest for a multi-class task: positives are the examples of
        ``positive_label``, negatives every other example. Only these counts
        leave a site, never a patient's score.
        """
        probs = (
            self.predict_proba(model=model, x=data.x, device=device)[0]
            if len(data)
            else np.zeros((0, self.num_classes))
        )
        return score_histogram(
            scores=probs[:, self.positive_label],
            is_positive=data.y == self.positive_label,
            bins=bins,
            positive_label=self.positive_label,
        )

    def rate_cells(
        self, *, model: torch.nn.Module, data: ArraySplit, device: torch.device
    ) -> dict[str, tuple[int, ...]]:
        """The confusion counts behind each rate :meth:`evaluate` reports (see
        :func:`flmi.tasks.metrics.rate_cells`); they never leave the site."""
        if len(data) == 0:
            return {}
        probs = self.predict_proba(model=model, x=data.x, device=device)[0]
        return rate_cells(labels=data.y, probs=probs, positive_label=self.positive_label)

    def evaluate(
        self, *, model: torch.nn.Module, data: ArraySplit, device: torch.device
    ) -> dict[str, float]:
        """Loss, accuracy, balanced accuracy, AUC, sensitivity and specificity.

        The loss is torch's, from the logits (the bootstrap's, from the
        probabilities, can differ in the last digits).
        """
        if len(data) == 0:
            return self.empty_metrics(data)
        probs, logits = self.predict_proba(model=model, x=data.x, device=device)
        loss = float(self._loss(logits, torch.from_numpy(data.y)))
        return classification_metrics(
            labels=data.y, probs=probs, loss=loss, positive_label=self.positive_label
        )
