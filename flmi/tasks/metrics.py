"""Classification metrics that clinicians read.

Keys are exactly those of :class:`flmi.core.keys.Metric`. A metric that cannot
be computed on the given labels (AUC with one class present, say) is NaN, and
NaN is written as ``null`` in the run directory.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from flmi.core.keys import Metric


def binary_auc(*, scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC of ``scores`` for the boolean ``positive`` labels; NaN if one class is absent.

    The Mann-Whitney form: the probability that a positive scores above a
    negative, a tie counting one half, from the mid-ranks of the scores. It
    is the area under the trapezoidal ROC curve, so it equals MONAI's
    ``compute_roc_auc`` (checked by a test), in one sort instead of a Python
    loop over thresholds.
    """
    positive = np.asarray(positive, dtype=bool)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(np.asarray(scores, dtype=np.float64), method="average")
    rank_sum = float(ranks[positive].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


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
