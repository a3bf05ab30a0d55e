"""Multi-label image classification: several findings per image, each present or not.

One logit per label, binary cross-entropy with logits, and per-label ROC AUC
(``auc_<k>``) with their macro mean (``auc``, over the labels whose AUC is
defined on the data).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from flmi.core.errors import ConfigError, LabelError
from flmi.core.keys import MultiLabelMetric
from flmi.data.arrays import ArraySplit
from flmi.tasks.augment import random_flip_shift
from flmi.tasks.base import NoScoreHistogram
from flmi.tasks.common import SupervisedTask
from flmi.tasks.loop import BatchTransform
from flmi.tasks.metrics import binary_auc
from flmi.tasks.model_registry import NetworkRequest, build_network, network_for
from flmi.tasks.networks import DenseNetSettings

EVAL_BATCH = 256


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return random_flip_shift(x, generator=generator)


def multilabel_metrics(*, labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Loss, macro AUC, per-label AUC and mean per-label accuracy at 0.5.

    Parameters
    ----------
    labels
        ``(N, L)`` indicators (1: label present).
    probs
        ``(N, L)`` predicted probabilities.
    """
    n, num_labels = labels.shape
    if n == 0:
        names = [*(m.value for m in MultiLabelMetric), *(f"auc_{k}" for k in range(num_labels))]
        return dict.fromkeys(names, math.nan)
    p = np.clip(probs, 1e-12, 1.0 - 1e-12)
    loss = float(-(labels * np.log(p) + (1 - labels) * np.log(1 - p)).mean())
    aucs = [binary_auc(scores=probs[:, k], positive=labels[:, k] == 1) for k in range(num_labels)]
    defined = [a for a in aucs if not math.isnan(a)]
    out = {
        MultiLabelMetric.LOSS.value: loss,
        MultiLabelMetric.AUC.value: float(np.mean(defined)) if defined else math.nan,
        MultiLabelMetric.ACCURACY.value: float(((probs >= 0.5) == (labels == 1)).mean()),
    }
    out.update({f"{MultiLabelMetric.AUC}_{k}": a for k, a in enumerate(aucs)})
    return out


class MultiLabelTask(SupervisedTask, NoScoreHistogram):
    """Predict ``num_classes`` independent labels per image.

    Parameters
    ----------
    num_classes
        Number of labels (at least 2); targets are ``(N, num_classes)`` of 0 and 1.
    in_channels
        Image channels.
    spatial_dims
        2 or 3.
    model
        ``"small_cnn"`` or ``"densenet121"``.
    width
        Width of the SmallCNN.
    densenet
        Size and normalisation of the DenseNet121.
    augment
        Random flips, rotations and shifts during local training.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        spatial_dims: int,
        model: str = "small_cnn",
        width: int = 32,
        densenet: DenseNetSettings | None = None,
        augment: bool = False,
    ) -> None:
        if num_classes < 2:
            raise ConfigError(
                f"task.num_classes is the number of labels for multi-label classification; "
                f"it must be at least 2, got {num_classes}"
            )
        if spatial_dims not in (2, 3):
            raise ConfigError(
                f"multi-label classification needs 2D or 3D images, got {spatial_dims} "
                "spatial dimensions"
            )
        network_for(model=model, task="classification", spatial_dims=spatial_dims)
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.spatial_dims = spatial_dims
        self.model_name = model
        self.width = width
        self.densenet = densenet if densenet is not None else DenseNetSettings()
        self.densenet.check()
        self.augment = augment

    @property
    def name(self) -> str:
        """The config name, ``"classification"`` (with ``multi_label = true``)."""
        return "classification"

    def build_model(self, *, seed: int) -> torch.nn.Module:
        """The network, initialised from ``seed`` without touching torch's global generator."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build_network(
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

    def check_labels(self, *, data: ArraySplit, where: str) -> None:
        """Targets must be ``(N, num_classes)`` indicators of 0 and 1."""
        if data.y.ndim != 2 or data.y.shape[1] != self.num_classes:
            raise LabelError(
                f"{where}: multi-label targets must have shape (N, {self.num_classes}), got "
                f"{list(data.y.shape)}; set [task] num_classes to the number of labels"
            )
        if len(data) and not np.isin(data.y, (0, 1)).all():
            raise LabelError(
                f"{where}: multi-label targets must be 0 or 1, found "
                f"{sorted(set(np.unique(data.y).tolist()) - {0, 1})[:3]}"
            )

    def training_tensors(self, data: ArraySplit) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and ``(N, num_classes)`` indicators."""
        return torch.from_numpy(data.x), torch.from_numpy(data.y)

    def training_loss(
        self,
        model: torch.nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """The mean binary cross-entropy over labels and images of one batch."""
        return F.binary_cross_entropy_with_logits(model(x), y.to(x.dtype))

    def training_transform(self) -> BatchTransform | None:
        """Random flips and shifts with ``augment``."""
        return _augment if self.augment else None

    @torch.no_grad()
    def predict_proba(
        self, *, model: torch.nn.Module, x: np.ndarray, device: torch.device
    ) -> np.ndarray:
        """Label probabilities ``(N, num_classes)``, in evaluation mode."""
        model.eval()
        parts = [
            torch.sigmoid(model(torch.from_numpy(x[i : i + EVAL_BATCH]).to(device))).float().cpu()
            for i in range(0, x.shape[0], EVAL_BATCH)
        ]
        if not parts:
            return np.zeros((0, self.num_classes))
        return torch.cat(parts).numpy().astype(np.float64)

    def scored(
        self, *, model: torch.nn.Module, data: ArraySplit, device: torch.device
    ) -> tuple[np.ndarray, np.ndarray]:
        """Indicators and label probabilities ``(N, num_classes)``."""
        return data.y, self.predict_proba(model=model, x=data.x, device=device)

    def metrics(self, targets: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
        """Loss, macro AUC, per-label AUC and mean per-label accuracy."""
        return multilabel_metrics(labels=targets, probs=predictions)

    def empty_metrics(self, data: ArraySplit) -> dict[str, float]:
        """NaN for every metric, one AUC per label included."""
        return multilabel_metrics(labels=data.y, probs=np.zeros((0, self.num_classes)))
