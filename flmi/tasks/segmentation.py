"""Semantic segmentation of 2D images and 3D volumes with MONAI networks.

Training minimises Dice plus cross-entropy (MONAI ``DiceCELoss``) on random
patches of ``patch_size`` (the whole image when unset); evaluation runs MONAI's
``sliding_window_inference`` over images larger than the patch, and scores
Dice per class and HD95 with MONAI's metrics. A site returns only the means
of those scores (and bootstrap intervals that resample its cases).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.inferers.utils import sliding_window_inference
from monai.losses.dice import DiceCELoss

from flmi.core.errors import ConfigError, LabelError
from flmi.core.keys import SegmentationMetric
from flmi.data.arrays import ArraySplit
from flmi.tasks.base import NoScoreHistogram
from flmi.tasks.common import SupervisedTask
from flmi.tasks.model_registry import NetworkRequest, build_network, network_for
from flmi.tasks.networks import NORMS, SEGMENTATION_DOWNSAMPLING
from flmi.tasks.segmentation_metrics import CaseScores, aggregate, case_scores

# Cases scored per forward pass during evaluation.
EVAL_BATCH = 4
SW_BATCH = 4
# Three halvings leave 2 pixels a side at the bottom: normalisation needs more than one.
MIN_PATCH = 2 * SEGMENTATION_DOWNSAMPLING


class SegmentationTask(SupervisedTask, NoScoreHistogram):
    """Label every pixel (2D) or voxel (3D) with one of ``num_classes`` classes.

    Parameters
    ----------
    num_classes
        Classes, background (0) included; mask values lie in ``0 .. num_classes - 1``.
    in_channels
        Image channels.
    spatial_dims
        2 or 3.
    model
        ``"unet"`` or ``"segresnet"`` (MONAI).
    width
        Channels of the network's first level.
    norm
        ``"auto"``, ``"batch"``, ``"instance"`` or ``"group"`` (see
        :mod:`flmi.tasks.networks`); GroupNorm or InstanceNorm for DP-SGD.
    patch_size
        Side lengths of the training patches, which are also the window of
        sliding-window inference; ``None``: whole images.
    sw_overlap
        Overlap of neighbouring windows in sliding-window inference, in ``[0, 1)``.
    augment
        Random flips along every spatial axis during training (image and mask together).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        spatial_dims: int,
        model: str = "unet",
        width: int = 16,
        norm: str = "auto",
        patch_size: Sequence[int] | None = None,
        sw_overlap: float = 0.25,
        augment: bool = False,
    ) -> None:
        if num_classes < 2:
            raise ConfigError(
                f"task.num_classes must be at least 2 for segmentation (background and one "
                f"class), got {num_classes}"
            )
        if spatial_dims not in (2, 3):
            raise ConfigError(
                f"segmentation needs 2D images or 3D volumes, but the data has "
                f"{spatial_dims} spatial dimensions"
            )
        if width < 1:
            raise ConfigError(f"task.width must be at least 1, got {width}")
        if not 0.0 <= sw_overlap < 1.0:
            raise ConfigError(f"task.sw_overlap must be in [0, 1), got {sw_overlap}")
        network_for(model=model, task="segmentation", spatial_dims=spatial_dims)
        if norm not in NORMS:
            raise ConfigError(f"task.norm must be one of {list(NORMS)}, got '{norm}'")
        if patch_size is not None:
            _check_patch(tuple(patch_size), spatial_dims=spatial_dims)
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.spatial_dims = spatial_dims
        self.model_name = model
        self.width = width
        self.norm = norm
        self.patch_size = tuple(patch_size) if patch_size is not None else None
        self.sw_overlap = sw_overlap
        self.augment = augment
        self._loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)

    @property
    def name(self) -> str:
        """The config name, ``"segmentation"``."""
        return "segmentation"

    def build_model(self, *, seed: int) -> torch.nn.Module:
        """The network, initialised from ``seed`` without touching torch's global generator."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build_network(
                model=self.model_name,
                task="segmentation",
                request=NetworkRequest(
                    spatial_dims=self.spatial_dims,
                    in_channels=self.in_channels,
                    out_channels=self.num_classes,
                    width=self.width,
                    norm=self.norm,
                ),
            )

    def check_image_shape(self, shape: Sequence[int], *, where: str) -> None:
        """Refuse images the network or the patch cannot take; the message names the fix.

        Parameters
        ----------
        shape
            Spatial shape of the images.
        where
            Which data, for the message.
        """
        shape = tuple(int(s) for s in shape)
        if self.patch_size is None:
            bad = [s for s in shape if s % SEGMENTATION_DOWNSAMPLING or s < MIN_PATCH]
            if bad:
                raise ConfigError(
                    f"{where}: image shape {list(shape)} is not divisible by "
                    f"{SEGMENTATION_DOWNSAMPLING} or below {MIN_PATCH} (the network halves it "
                    f"three times); set task.patch_size to a multiple of "
                    f"{SEGMENTATION_DOWNSAMPLING} that fits"
                )
            return
        if len(self.patch_size) != len(shape) or any(
            p > s for p, s in zip(self.patch_size, shape, strict=True)
        ):
            raise ConfigError(
                f"task.patch_size = {list(self.patch_size)} does not fit {where} of shape "
                f"{list(shape)}; give one side per spatial axis, each at most the image's"
            )

    def check_labels(self, *, data: ArraySplit, where: str) -> None:
        """Masks must match the images' spatial shape and hold only the task's classes."""
        self.check_image_shape(data.x.shape[2:], where=where)
        if data.y.shape[1:] != data.x.shape[2:]:
            raise LabelError(
                f"{where}: masks of shape {list(data.y.shape[1:])} do not match images of "
                f"shape {list(data.x.shape[2:])}; segmentation needs one mask per image, "
                "same size"
            )
        if len(data) == 0:
            return
        low, high = int(data.y.min()), int(data.y.max())
        if low < 0 or high >= self.num_classes:
            bad = low if low < 0 else high
            raise LabelError(
                f"{where}: mask value {bad} is outside the task's classes "
                f"0..{self.num_classes - 1}; set [task] num_classes to cover every class "
                "(background included), or fix the masks"
            )

    def _crop_and_flip(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A random patch per case and, with ``augment``, random flips; image and mask alike."""
        shape = x.shape[2:]
        if self.patch_size is not None and tuple(shape) != self.patch_size:
            starts = [
                torch.randint(0, s - p + 1, (x.shape[0],), generator=generator)
                for s, p in zip(shape, self.patch_size, strict=True)
            ]
            xs, ys = [], []
            for i in range(x.shape[0]):
                xi, yi = x[i], y[i]
                for axis, (st, p) in enumerate(zip(starts, self.patch_size, strict=True)):
                    xi = xi.narrow(axis + 1, int(st[i]), p)
                    yi = yi.narrow(axis, int(st[i]), p)
                xs.append(xi)
                ys.append(yi)
            x, y = torch.stack(xs), torch.stack(ys)
        if self.augment:
            flips = torch.rand(x.shape[0], self.spatial_dims, generator=generator) < 0.5
            xs, ys = [], []
            for i in range(x.shape[0]):
                axes = [a for a in range(self.spatial_dims) if bool(flips[i, a])]
                xs.append(torch.flip(x[i], dims=[a + 1 for a in axes]) if axes else x[i])
                ys.append(torch.flip(y[i], dims=axes) if axes else y[i])
            x, y = torch.stack(xs), torch.stack(ys)
        return x, y

    def training_tensors(self, data: ArraySplit) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and masks."""
        return torch.from_numpy(data.x), torch.from_numpy(data.y)

    def training_loss(
        self,
        model: torch.nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """Dice + cross-entropy of one batch of random patches (flipped with ``augment``)."""
        x, y = self._crop_and_flip(x, y, generator)
        out: torch.Tensor = self._loss_fn(model(x), y.unsqueeze(1))
        return out

    @torch.no_grad()
    def predict_logits(
        self, *, model: torch.nn.Module, x: torch.Tensor, device: torch.device
    ) -> torch.Tensor:
        """Logits ``(N, C, *spatial)`` on ``device``; sliding windows for images over the patch."""
        model.eval()
        x = x.to(device)
        if self.patch_size is None or tuple(x.shape[2:]) == self.patch_size:
            out: torch.Tensor = model(x)
            return out
        result = sliding_window_inference(
            inputs=x,
            roi_size=self.patch_size,
            sw_batch_size=SW_BATCH,
            predictor=model,
            overlap=self.sw_overlap,
            mode="gaussian",
        )
        assert isinstance(result, torch.Tensor)
        return result

    def case_scores(
        self, *, model: torch.nn.Module, data: ArraySplit, device: torch.device
    ) -> CaseScores:
        """Dice, HD95 and loss of every case (these stay at the site)."""
        parts: list[CaseScores] = []
        for start in range(0, len(data), EVAL_BATCH):
            x = torch.from_numpy(data.x[start : start + EVAL_BATCH])
            y = torch.from_numpy(data.y[start : start + EVAL_BATCH]).to(device)
            logits = self.predict_logits(model=model, x=x, device=device)
            losses = np.array(
                [
                    float(self._loss_fn(logits[i : i + 1], y[i : i + 1].unsqueeze(1)))
                    for i in range(logits.shape[0])
                ]
            )
            parts.append(
                case_scores(
                    predicted=logits.argmax(dim=1).cpu(),
                    truth=y.cpu(),
                    num_classes=self.num_classes,
                    loss=losses,
                )
            )
        return CaseScores.concat(parts, num_classes=self.num_classes)

    def scored(
        self, *, model: torch.nn.Module, data: ArraySplit, device: torch.device
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per case: Dice of each class; then HD95 of each class and the loss, side by side."""
        scores = self.case_scores(model=model, data=data, device=device)
        return scores.dice, np.concatenate([scores.hd95, scores.loss[:, None]], axis=1)

    def metrics(self, targets: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
        """Mean loss, Dice and HD95 (over foreground classes, and per class) of :meth:`scored`."""
        classes = targets.shape[1]
        return aggregate(
            CaseScores(dice=targets, hd95=predictions[:, :classes], loss=predictions[:, classes])
        )

    def empty_metrics(self, data: ArraySplit) -> dict[str, float]:
        """The metrics of no cases (NaN)."""
        return aggregate(CaseScores.concat([], num_classes=self.num_classes))


def _check_patch(patch: tuple[int, ...], *, spatial_dims: int) -> None:
    if len(patch) != spatial_dims or any(
        p < MIN_PATCH or p % SEGMENTATION_DOWNSAMPLING for p in patch
    ):
        raise ConfigError(
            f"task.patch_size = {list(patch)}: give {spatial_dims} sides, each a multiple of "
            f"{SEGMENTATION_DOWNSAMPLING} and at least {MIN_PATCH} (the network halves the "
            "patch three times and normalises what is left), "
            f"e.g. {[4 * SEGMENTATION_DOWNSAMPLING] * spatial_dims}"
        )


def seg_metric_names(num_classes: int) -> list[str]:
    """Every key :meth:`SegmentationTask.evaluate` returns, sorted."""
    names = [m.value for m in SegmentationMetric]
    for c in range(1, num_classes):
        names += [f"{SegmentationMetric.DICE}_{c}", f"{SegmentationMetric.HD95}_{c}"]
    return sorted(names)
