"""Per-case Dice and HD95 from MONAI, and their aggregates.

A site computes these on its own cases and sends only the aggregates (and
bootstrap intervals of them); the per-case values never leave.

Conventions for cases without a class:

* Dice is undefined for a case whose ground truth lacks the class and is left
  out of that class's mean (MONAI's default, ``ignore_empty=True``): Dice
  measures how well lesions are outlined where there are lesions.
* HD95 of a class absent from both the prediction and the ground truth is 0;
  absent from one only, the length of the image diagonal in pixels (the
  largest distance the image allows), as in the BraTS challenge. False
  positives on lesion-free cases therefore show in HD95.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from monai.metrics.hausdorff_distance import HausdorffDistanceMetric
from monai.metrics.meandice import DiceMetric

from flmi.core.keys import SegmentationMetric


@dataclass(frozen=True)
class CaseScores:
    """Per-case scores of one batch or data set.

    Parameters
    ----------
    dice
        ``(N, C - 1)``: Dice of each foreground class per case (NaN where the
        ground truth lacks the class).
    hd95
        ``(N, C - 1)``: 95th-percentile Hausdorff distance in pixels.
    loss
        ``(N,)``: the training loss of each case.
    """

    dice: np.ndarray
    hd95: np.ndarray
    loss: np.ndarray

    @staticmethod
    def concat(parts: list[CaseScores], *, num_classes: int) -> CaseScores:
        """Concatenate batches in order."""
        if not parts:
            empty = np.zeros((0, num_classes - 1))
            return CaseScores(dice=empty, hd95=empty.copy(), loss=np.zeros(0))
        return CaseScores(
            dice=np.concatenate([p.dice for p in parts]),
            hd95=np.concatenate([p.hd95 for p in parts]),
            loss=np.concatenate([p.loss for p in parts]),
        )


def one_hot(labels: torch.Tensor, *, num_classes: int) -> torch.Tensor:
    """``(N, *spatial)`` class indices to ``(N, C, *spatial)`` one-hot floats."""
    out = torch.nn.functional.one_hot(labels.long(), num_classes)
    return out.movedim(-1, 1).float()


def case_scores(
    *, predicted: torch.Tensor, truth: torch.Tensor, num_classes: int, loss: np.ndarray
) -> CaseScores:
    """Dice and HD95 of every foreground class for each case.

    Parameters
    ----------
    predicted, truth
        Class indices ``(N, *spatial)`` (CPU tensors).
    num_classes
        Classes, background (0) included.
    loss
        Per-case loss, computed by the caller from the logits.
    """
    pred_1h = one_hot(predicted, num_classes=num_classes)
    true_1h = one_hot(truth, num_classes=num_classes)
    dice_metric = DiceMetric(include_background=False, reduction="none", ignore_empty=True)
    dice = dice_metric(pred_1h, true_1h).numpy().astype(np.float64)  # type: ignore[union-attr]
    dims = tuple(range(2, pred_1h.ndim))
    pred_any = pred_1h[:, 1:].amax(dim=dims).bool().numpy()
    true_any = true_1h[:, 1:].amax(dim=dims).bool().numpy()
    both = pred_any & true_any
    diagonal = math.sqrt(sum(s * s for s in truth.shape[1:]))
    hd95 = np.where(pred_any | true_any, diagonal, 0.0)
    if both.any():
        metric = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # empty classes are handled above
            values = metric(pred_1h, true_1h).numpy().astype(np.float64)  # type: ignore[union-attr]
        hd95 = np.where(both, values, hd95)
    return CaseScores(dice=dice, hd95=hd95, loss=np.asarray(loss, dtype=np.float64))


def aggregate(scores: CaseScores) -> dict[str, float]:
    """Mean loss; Dice and HD95 per class and their mean over foreground classes.

    Keys: ``loss``, ``dice``, ``hd95`` and ``dice_<c>``, ``hd95_<c>`` for each
    foreground class ``c`` (1-based, as in the masks). A class's Dice is the
    mean over the cases that contain it; ``dice`` and ``hd95`` are the means
    of the per-class values that are defined. Values are NaN when undefined.
    """
    classes = scores.dice.shape[1]
    out: dict[str, float] = {SegmentationMetric.LOSS.value: _mean(scores.loss)}
    dice = [_mean(scores.dice[:, c]) for c in range(classes)]
    hd95 = [_mean(scores.hd95[:, c]) for c in range(classes)]
    out[SegmentationMetric.DICE.value] = _mean(np.asarray(dice))
    out[SegmentationMetric.HD95.value] = _mean(np.asarray(hd95))
    for c in range(classes):
        out[f"{SegmentationMetric.DICE}_{c + 1}"] = dice[c]
        out[f"{SegmentationMetric.HD95}_{c + 1}"] = hd95[c]
    return out


def _mean(values: np.ndarray) -> float:
    """Mean of the defined (non-NaN) values; NaN when there are none."""
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else math.nan
