"""Regression: one number per image or per row (age from a scan, a lab value)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from flmi.core.errors import ConfigError, LabelError
from flmi.data.arrays import ArraySplit
from flmi.tasks.augment import random_flip_shift
from flmi.tasks.base import NoScoreHistogram
from flmi.tasks.common import SupervisedTask
from flmi.tasks.loop import BatchTransform
from flmi.tasks.model_registry import NetworkRequest, build_network, network_for
from flmi.tasks.regression_metrics import regression_metrics
from flmi.tasks.torch_params import as_tensor

LOSSES = ("mse", "l1")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
EVAL_BATCH = 512


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return random_flip_shift(x, generator=generator)


class RegressionTask(SupervisedTask, NoScoreHistogram):
    """Predict one real number per example, trained with MSE or L1 loss.

    The network's output ``z`` is read as ``target_offset + target_scale * z``,
    so the network works in standard units while predictions and the metrics
    (MAE, RMSE, R²) are in the target's own units (years, say). Both constants
    are configuration, never statistics of a site's data. The reported
    ``loss`` is the training objective, in standard units.

    Parameters
    ----------
    in_channels
        Image channels, or features of a table.
    spatial_dims
        2 or 3 for images, 0 for tables.
    loss
        ``"mse"`` or ``"l1"``.
    model
        ``"small_cnn"`` for images, ``"linear"`` for tables.
    width
        Width of the CNN's first block.
    target_offset, target_scale
        A typical target value and spread (e.g. 55 and 15 years).
    augment
        Random flips and shifts of images during local training.
    dtype
        ``"float32"`` or ``"float64"``.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        spatial_dims: int,
        loss: str = "mse",
        model: str = "small_cnn",
        width: int = 32,
        target_offset: float = 0.0,
        target_scale: float = 1.0,
        augment: bool = False,
        dtype: str = "float32",
    ) -> None:
        if loss not in LOSSES:
            raise ConfigError(f"task.loss: unknown loss '{loss}'; choose one of {list(LOSSES)}")
        network_for(model=model, task="regression", spatial_dims=spatial_dims)
        if not (math.isfinite(target_scale) and target_scale > 0):
            raise ConfigError(f"task.target_scale must be positive, got {target_scale}")
        if dtype not in DTYPES:
            raise ConfigError(f"task.dtype must be one of {sorted(DTYPES)}, got '{dtype}'")
        self.in_channels = in_channels
        self.spatial_dims = spatial_dims
        self.loss_name = loss
        self.model_name = model
        self.width = width
        self.target_offset = target_offset
        self.target_scale = target_scale
        self.augment = augment
        self.dtype = DTYPES[dtype]

    @property
    def name(self) -> str:
        """The config name, ``"regression"``."""
        return "regression"

    def build_model(self, *, seed: int) -> torch.nn.Module:
        """A one-output network initialised from ``seed`` (torch's global generator untouched)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_network(
                model=self.model_name,
                task="regression",
                request=NetworkRequest(
                    spatial_dims=self.spatial_dims,
                    in_channels=self.in_channels,
                    out_channels=1,
                    width=self.width,
                ),
            )
        return model.to(self.dtype)

    def _standard(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self.target_offset) / self.target_scale

    def _objective(self, out: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if self.loss_name == "l1":
            return F.l1_loss(out, z)
        return F.mse_loss(out, z)

    def check_labels(self, *, data: ArraySplit, where: str) -> None:
        """Every target must be one finite number per example."""
        if data.y.ndim != 1:
            raise LabelError(
                f"{where}: regression needs one target per example, got shape {data.y.shape}"
            )
        if len(data) and not np.isfinite(data.y.astype(np.float64)).all():
            raise LabelError(f"{where}: a target is NaN or infinite; fix or drop that row")

    def training_tensors(self, data: ArraySplit) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs in the task's dtype and targets in standard units."""
        return as_tensor(data.x, self.dtype), self._standard(as_tensor(data.y, self.dtype))

    def training_loss(
        self,
        model: torch.nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """The configured loss of one batch, in standard units."""
        return self._objective(model(x)[:, 0], y)

    def training_transform(self) -> BatchTransform | None:
        """Random flips and shifts with ``augment``."""
        return _augment if self.augment else None

    @torch.no_grad()
    def predict(self, *, model: torch.nn.Module, x: np.ndarray, device: torch.device) -> np.ndarray:
        """Predictions ``(N,)`` in the target's units, in evaluation mode."""
        model.eval()
        outs = [
            model(as_tensor(x[i : i + EVAL_BATCH], self.dtype).to(device))[:, 0].double().cpu()
            for i in range(0, x.shape[0], EVAL_BATCH)
        ]
        z = torch.cat(outs).numpy() if outs else np.zeros(0)
        return self.target_offset + self.target_scale * z

    def scored(
        self, *, model: torch.nn.Module, data: ArraySplit, device: torch.device
    ) -> tuple[np.ndarray, np.ndarray]:
        """Targets and predictions ``(N,)`` in the target's units."""
        return data.y, self.predict(model=model, x=data.x, device=device)

    def metrics(self, targets: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
        """Loss (standard units), MAE, RMSE (target units) and R²."""
        error = (predictions - targets.astype(np.float64)) / self.target_scale
        loss = np.abs(error).mean() if self.loss_name == "l1" else (error**2).mean()
        return regression_metrics(targets=targets, predictions=predictions, loss=float(loss))

    def empty_metrics(self, data: ArraySplit) -> dict[str, float]:
        """NaN for every metric."""
        return regression_metrics(targets=data.y, predictions=data.y, loss=float("nan"))
