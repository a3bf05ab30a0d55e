"""Classification metrics that clinicians read.

Keys are exactly those of :class:`flmi.core.keys.Metric`. A metric that cannot
be computed on the given labels (AUC with one class present, say) is NaN, and
NaN is written as ``null`` in the run directory.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from monai.metrics.rocauc import compute_roc_auc

from flmi.core.keys import Metric


def binary_auc(*, scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC of ``scores`` for the boolean ``positive`` labels; NaN if one class is absent."""
    n_pos = int(positive.sum())
    if n_pos == 0 or n_pos == positive.size:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = compute_roc_auc(
            torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float64)),
            torch.from_numpy(positive.astype(np.int64)),
        )
    return float(value)  # type: ignore[arg-type]


def classification_metrics(
    *, labels: np.ndarray, probs: np.ndarray, loss: float, positive_label: int
) -> dict[str, float]:
    """Loss, accuracy, balanced accuracy, macro one-vs-rest AUC, sensitivity, specificity.

    Parameters
    ----------
    labels
        Integer labels, shape ``(N,)``.
    probs
        Class probabilities, shape ``(N, C)``.
    loss
        Mean cross-entropy, computed by the caller from the logits.
    positive_label
        The class sensitivity refers to (for BreastMNIST, 0 = malignant).
        Specificity is the recall of every other class taken together.
    """
    num_classes = probs.shape[1]
    predicted = probs.argmax(axis=1)
    present = [c for c in range(num_classes) if (labels == c).any()]
    recalls = [float((predicted[labels == c] == c).mean()) for c in present]
    aucs = [binary_auc(scores=probs[:, c], positive=labels == c) for c in range(num_classes)]
    defined = [a for a in aucs if not np.isnan(a)]
    if num_classes == 2:
        auc = aucs[positive_label]
    else:
        auc = float(np.mean(defined)) if defined else float("nan")
    is_pos = labels == positive_label
    said_pos = predicted == positive_label
    sensitivity = float(said_pos[is_pos].mean()) if is_pos.any() else float("nan")
    specificity = float((~said_pos[~is_pos]).mean()) if (~is_pos).any() else float("nan")
    return {
        Metric.LOSS: float(loss),
        Metric.ACCURACY: float((predicted == labels).mean()) if labels.size else float("nan"),
        Metric.BALANCED_ACCURACY: float(np.mean(recalls)) if recalls else float("nan"),
        Metric.AUC: auc,
        Metric.SENSITIVITY: sensitivity,
        Metric.SPECIFICITY: specificity,
    }
