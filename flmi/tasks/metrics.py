"""Classification metrics that clinicians read.

Keys are exactly those of :class:`flmi.core.keys.Metric`. A metric that cannot
be computed on the given labels (AUC with one class present, say) is NaN, and
NaN is written as ``null`` in the run directory.

:func:`resampled_classification_metrics` gives the same metrics for many
bootstrap resamples at once, in a few numpy passes over an index matrix.
"""

from __future__ import annotations

import numpy as np

from flmi.core.keys import Metric


def resampled_binary_auc(
    *, scores: np.ndarray, positive: np.ndarray, index: np.ndarray
) -> np.ndarray:
    """ROC AUC of each resample ``index[r]`` of the examples; NaN where one class is absent.

    The Mann-Whitney form: the probability that a positive scores above a
    negative, a tie counting one half. It counts, per resample, how many
    positives and negatives drew each distinct score, so a resample costs
    one pass over the distinct scores instead of a sort. The statistic is
    a sum of half-integers, exact in float64, so the value is the same as
    from the mid-ranks of the resampled scores.

    Parameters
    ----------
    scores
        Scores of the ``N`` examples, shape ``(N,)``.
    positive
        Whether each example is positive, shape ``(N,)``.
    index
        Resampled example indices, shape ``(R, N')``.

    Returns
    -------
    np.ndarray
        ``(R,)`` AUCs.
    """
    positive = np.asarray(positive, dtype=bool)
    index = np.atleast_2d(index)
    rows = index.shape[0]
    distinct, inverse = np.unique(np.asarray(scores, dtype=np.float64), return_inverse=True)
    u = distinct.size
    cell = inverse.reshape(-1)[index] + (np.arange(rows) * u)[:, None]
    size = rows * u
    pos = np.bincount(cell[positive[index]], minlength=size).reshape(rows, u)
    neg = np.bincount(cell.reshape(-1), minlength=size).reshape(rows, u) - pos
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    below = np.cumsum(neg, axis=1) - neg
    twice_u = (pos * (2 * below + neg)).sum(axis=1)  # twice the Mann-Whitney U, an integer
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = twice_u / (2.0 * n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def binary_auc(*, scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC of ``scores`` for the boolean ``positive`` labels; NaN if one class is absent.

    The Mann-Whitney form: the probability that a positive scores above a
    negative, a tie counting one half. It is the area under the trapezoidal
    ROC curve, so it equals MONAI's ``compute_roc_auc`` (checked by a test),
    in one sort instead of a Python loop over thresholds.
    """
    n = np.asarray(positive).shape[0]
    return float(resampled_binary_auc(scores=scores, positive=positive, index=np.arange(n))[0])


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


def _ratio(hits: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``hits / counts`` per resample, NaN where ``counts`` is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(counts > 0, hits / counts, np.nan)


def _defined_mean(columns: np.ndarray) -> np.ndarray:
    """Mean over axis 1 of the non-NaN entries, summed in column order; NaN if none."""
    defined = ~np.isnan(columns)
    total = np.zeros(columns.shape[0])
    for c in range(columns.shape[1]):
        total = total + np.where(defined[:, c], columns[:, c], 0.0)
    return _ratio(total, defined.sum(axis=1))


def resampled_classification_metrics(
    *, labels: np.ndarray, probs: np.ndarray, index: np.ndarray, positive_label: int
) -> dict[str, np.ndarray]:
    """:func:`classification_metrics` of every resample, the loss from the probabilities.

    Row ``r`` of each value equals the metric of ``labels[index[r]]`` and
    ``probs[index[r]]`` with the loss ``-log(clip(p_true, 1e-12, 1))``
    averaged (what :class:`flmi.tasks.classification.ClassificationTask`
    reports), NaN where that metric is.

    Parameters
    ----------
    labels
        Integer labels, shape ``(N,)``.
    probs
        Class probabilities, shape ``(N, C)``.
    index
        Resampled example indices, shape ``(R, N)``.
    positive_label
        The class sensitivity refers to.

    Returns
    -------
    dict[str, np.ndarray]
        ``{metric: (R,) values}``.
    """
    n, num_classes = probs.shape
    predicted = probs.argmax(axis=1)
    nll = -np.log(np.clip(probs[np.arange(n), labels], 1e-12, 1.0))
    recalls = np.stack(
        [
            _ratio(
                ((labels == c) & (predicted == c))[index].sum(axis=1),
                (labels == c)[index].sum(axis=1),
            )
            for c in range(num_classes)
        ],
        axis=1,
    )
    aucs = np.stack(
        [
            resampled_binary_auc(scores=probs[:, c], positive=labels == c, index=index)
            for c in range(num_classes)
        ],
        axis=1,
    )
    auc = aucs[:, positive_label] if num_classes == 2 else _defined_mean(aucs)
    is_pos = labels == positive_label
    said_pos = predicted == positive_label
    return {
        Metric.LOSS: nll[index].mean(axis=1),
        Metric.ACCURACY: (predicted == labels)[index].mean(axis=1),
        Metric.BALANCED_ACCURACY: _defined_mean(recalls),
        Metric.AUC: auc,
        Metric.SENSITIVITY: _ratio(
            (said_pos & is_pos)[index].sum(axis=1), is_pos[index].sum(axis=1)
        ),
        Metric.SPECIFICITY: _ratio(
            (~said_pos & ~is_pos)[index].sum(axis=1), (~is_pos)[index].sum(axis=1)
        ),
    }


def rate_cells(
    *, labels: np.ndarray, probs: np.ndarray, positive_label: int
) -> dict[str, tuple[int, ...]]:
    """The confusion counts each rate of :func:`classification_metrics` determines.

    A rate times its denominator gives back these counts, so a site must not
    publish a rate one of whose cells is a small count: sensitivity
    determines true positives and false negatives, specificity true
    negatives and false positives, accuracy the correct and the wrong
    predictions, balanced accuracy every class's correct and wrong ones, and
    the AUC (a fraction of positive-negative pairs) every class's size and
    the size of the rest.
    """
    predicted = probs.argmax(axis=1)
    is_pos = labels == positive_label
    said_pos = predicted == positive_label
    right = predicted == labels
    per_class = tuple(
        int(n)
        for c in range(probs.shape[1])
        for n in (int((right & (labels == c)).sum()), int((~right & (labels == c)).sum()))
    )
    sizes = tuple(
        int(n) for c in range(probs.shape[1]) for n in ((labels == c).sum(), (labels != c).sum())
    )
    return {
        Metric.SENSITIVITY: (int((said_pos & is_pos).sum()), int((~said_pos & is_pos).sum())),
        Metric.SPECIFICITY: (int((~said_pos & ~is_pos).sum()), int((said_pos & ~is_pos).sum())),
        Metric.ACCURACY: (int(right.sum()), int((~right).sum())),
        Metric.BALANCED_ACCURACY: per_class,
        Metric.AUC: sizes,
    }
