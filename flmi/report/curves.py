"""ROC curves, confusion matrices, calibration and the operating threshold, from histograms.

Sites never send per-patient scores: each sends a :class:`ScoreHistogram`
(positives and negatives counted per predicted-probability bin). Everything
here is computed from those counts alone (numpy only).

A patient is called positive at threshold bin ``k`` when its score falls in
bin ``k`` or above, i.e. ``score >= k / bins`` (see :func:`bin_index`). Every
threshold is a bin edge, so sensitivity and specificity at a threshold are
exact, and the histogram's ROC AUC differs from the exact AUC only through
pairs of a positive and a negative that share a bin (:func:`auc_binning_bound`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from flmi.core.messages import ScoreHistogram

DEFAULT_THRESHOLD = 0.5


def bin_index(scores: np.ndarray, bins: int) -> np.ndarray:
    """The bin of each score in ``[0, 1]``: ``min(floor(score * bins), bins - 1)``."""
    index = np.floor(np.asarray(scores, dtype=np.float64) * bins).astype(np.int64)
    return np.clip(index, 0, bins - 1)


def score_histogram(
    *, scores: np.ndarray, is_positive: np.ndarray, bins: int, positive_label: int
) -> ScoreHistogram:
    """Count positives and negatives per bin of ``scores`` (the probability of ``positive_label``).

    Parameters
    ----------
    scores
        Predicted probabilities of the positive class, shape ``(N,)``.
    is_positive
        Boolean, shape ``(N,)``: whether each example is labelled ``positive_label``.
    bins
        Number of equal bins on ``[0, 1]``.
    positive_label
        The class the scores refer to (recorded in the histogram).
    """
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    index = bin_index(scores, bins)
    positive = np.asarray(is_positive, dtype=bool)
    return ScoreHistogram(
        positive_label=positive_label,
        positives=np.bincount(index[positive], minlength=bins).astype(np.int64),
        negatives=np.bincount(index[~positive], minlength=bins).astype(np.int64),
    )


def total(histograms: list[ScoreHistogram]) -> ScoreHistogram | None:
    """The sum of ``histograms`` (all patients together), or ``None`` for none."""
    if not histograms:
        return None
    out = histograms[0]
    for h in histograms[1:]:
        out = out + h
    return out


@dataclass(frozen=True)
class Rates:
    """Counts and rates when every score in bin ``k`` or above is called positive."""

    tp: int
    fn: int
    fp: int
    tn: int

    @property
    def sensitivity(self) -> float:
        """True-positive rate; NaN without positives."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")

    @property
    def specificity(self) -> float:
        """True-negative rate; NaN without negatives."""
        return self.tn / (self.tn + self.fp) if self.tn + self.fp else float("nan")


def rates_at(histogram: ScoreHistogram, threshold_bin: int) -> Rates:
    """The confusion counts when scores in bin ``threshold_bin`` or above are called positive."""
    k = int(np.clip(threshold_bin, 0, histogram.bins))
    tp, fp = int(histogram.positives[k:].sum()), int(histogram.negatives[k:].sum())
    return Rates(
        tp=tp,
        fn=int(histogram.positives.sum()) - tp,
        fp=fp,
        tn=int(histogram.negatives.sum()) - fp,
    )


def roc_points(histogram: ScoreHistogram) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False- and true-positive rates at every bin edge, from threshold 1 down to 0.

    Returns
    -------
    tuple of arrays
        ``(fpr, tpr, thresholds)``, each of length ``bins + 1``; NaN rates when
        a class is absent.
    """
    pos = histogram.positives[::-1].cumsum()[::-1]  # positives in bin k or above
    neg = histogram.negatives[::-1].cumsum()[::-1]
    n_pos, n_neg = int(histogram.positives.sum()), int(histogram.negatives.sum())
    tp = np.append(pos, 0)[::-1].astype(np.float64)  # thresholds bins, bins-1, ..., 0
    fp = np.append(neg, 0)[::-1].astype(np.float64)
    tpr = tp / n_pos if n_pos else np.full_like(tp, np.nan)
    fpr = fp / n_neg if n_neg else np.full_like(fp, np.nan)
    thresholds = np.arange(histogram.bins, -1, -1) / histogram.bins
    return fpr, tpr, thresholds


def histogram_auc(histogram: ScoreHistogram) -> float:
    """ROC AUC by the trapezoid rule over the bin edges; NaN if a class is absent.

    This is the Mann-Whitney statistic with every positive-negative pair that
    shares a bin counted as a tie (one half).
    """
    fpr, tpr, _ = roc_points(histogram)
    if np.isnan(fpr).any() or np.isnan(tpr).any():
        return float("nan")
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def auc_binning_bound(histogram: ScoreHistogram) -> float:
    """Largest possible gap between :func:`histogram_auc` and the AUC of the unbinned scores."""
    n_pos, n_neg = int(histogram.positives.sum()), int(histogram.negatives.sum())
    if not n_pos or not n_neg:
        return float("nan")
    shared = float(np.sum(histogram.positives * histogram.negatives))
    return 0.5 * shared / (n_pos * n_neg)


def calibration(histogram: ScoreHistogram, *, groups: int = 10) -> dict[str, list[float]]:
    """A reliability curve: observed share of positives against the predicted probability.

    Adjacent bins are merged into ``groups`` equal groups (``groups`` must
    divide the number of bins); the predicted probability of a group is the
    count-weighted mean of its bin centres. Empty groups are left out.
    """
    if histogram.bins % groups:
        groups = histogram.bins
    per = histogram.bins // groups
    centres = (np.arange(histogram.bins) + 0.5) / histogram.bins
    counts = histogram.positives + histogram.negatives
    out: dict[str, list[float]] = {"predicted": [], "observed": [], "count": []}
    for g in range(groups):
        part = slice(g * per, (g + 1) * per)
        n = int(counts[part].sum())
        if n == 0:
            continue
        out["predicted"].append(float(np.sum(centres[part] * counts[part]) / n))
        out["observed"].append(float(histogram.positives[part].sum() / n))
        out["count"].append(float(n))
    return out


class ThresholdMethod(StrEnum):
    """How the operating threshold was chosen."""

    YOUDEN = "youden"
    TARGET_SENSITIVITY = "target_sensitivity"
    DEFAULT = "default"


@dataclass(frozen=True)
class Threshold:
    """The operating threshold on the probability of the positive class.

    Parameters
    ----------
    value
        A patient is called positive when its probability is at least ``value``
        (in bins: ``bin_index(p) >= bin``).
    bin
        ``value * bins``, the first bin called positive.
    bins
        Number of histogram bins the threshold was chosen on.
    method
        Youden's J, a target sensitivity, or the default 0.5 (no validation data).
    chosen_on
        ``"val"`` (the sites' validation splits), or ``"none"``.
    val_sensitivity, val_specificity
        The rates at the threshold on the validation data (NaN when none).
    note
        Why the default was used, when it was.
    """

    value: float
    bin: int
    bins: int
    method: ThresholdMethod
    chosen_on: str
    val_sensitivity: float = float("nan")
    val_specificity: float = float("nan")
    target_sensitivity: float | None = None
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        """JSON-ready, NaN written as ``None``."""

        def num(x: float) -> float | None:
            return None if np.isnan(x) else float(x)

        return {
            "value": self.value,
            "bin": self.bin,
            "bins": self.bins,
            "method": self.method.value,
            "chosen_on": self.chosen_on,
            "val_sensitivity": num(self.val_sensitivity),
            "val_specificity": num(self.val_specificity),
            "target_sensitivity": self.target_sensitivity,
            "note": self.note,
        }


def default_threshold(*, bins: int, note: str) -> Threshold:
    """0.5, used when there is no validation data to choose on (never the test data)."""
    return Threshold(
        value=DEFAULT_THRESHOLD,
        bin=round(DEFAULT_THRESHOLD * bins),
        bins=bins,
        method=ThresholdMethod.DEFAULT,
        chosen_on="none",
        note=note,
    )


def choose_threshold(
    *, val: ScoreHistogram | None, bins: int, target_sensitivity: float | None = None
) -> Threshold:
    """Choose the operating threshold on validation counts only.

    Parameters
    ----------
    val
        The validation splits' histogram (summed over sites), or ``None``.
    bins
        Number of bins (for the default when ``val`` is ``None``).
    target_sensitivity
        ``None``: maximise Youden's J = sensitivity + specificity - 1 (ties:
        the middle of the tied thresholds). A number: the highest threshold
        whose validation sensitivity reaches it (the best specificity that
        keeps that sensitivity).
    """
    if val is None:
        return default_threshold(bins=bins, note="no validation split: threshold 0.5 used")
    n_pos, n_neg = int(val.positives.sum()), int(val.negatives.sum())
    if n_pos == 0 or n_neg == 0:
        missing = "positive" if n_pos == 0 else "negative"
        return default_threshold(
            bins=val.bins,
            note=f"the validation splits hold no {missing} example: threshold 0.5 used",
        )
    edges = range(val.bins + 1)
    rates = [rates_at(val, k) for k in edges]
    sens = np.array([r.sensitivity for r in rates])
    spec = np.array([r.specificity for r in rates])
    if target_sensitivity is None:
        j = sens + spec - 1.0
        tied = np.flatnonzero(np.isclose(j, j.max(), rtol=0.0, atol=1e-12))
        k = int(tied[len(tied) // 2])
        method = ThresholdMethod.YOUDEN
    else:
        reaching = np.flatnonzero(sens >= target_sensitivity - 1e-12)
        k = int(reaching.max())  # threshold 0 reaches sensitivity 1, so never empty
        method = ThresholdMethod.TARGET_SENSITIVITY
    return Threshold(
        value=k / val.bins,
        bin=k,
        bins=val.bins,
        method=method,
        chosen_on="val",
        val_sensitivity=float(sens[k]),
        val_specificity=float(spec[k]),
        target_sensitivity=target_sensitivity,
    )


def histogram_json(histogram: ScoreHistogram) -> dict[str, Any]:
    """The counts, and the ROC curve, AUC and calibration derived from them.

    ``auc_binning_bound`` is how far the histogram's AUC can lie from the AUC of
    the unbinned scores (large when scores crowd into few bins, as an
    untrained model's do near 0.5; more ``[report] histogram_bins`` shrink it).
    """
    fpr, tpr, thresholds = roc_points(histogram)
    auc, bound = histogram_auc(histogram), auc_binning_bound(histogram)
    return {
        "positives": histogram.positives.tolist(),
        "negatives": histogram.negatives.tolist(),
        "roc": {
            "fpr": [None if np.isnan(v) else float(v) for v in fpr],
            "tpr": [None if np.isnan(v) else float(v) for v in tpr],
            "thresholds": thresholds.tolist(),
            "auc": None if np.isnan(auc) else auc,
            "auc_binning_bound": None if np.isnan(bound) else bound,
        },
        "calibration": calibration(histogram),
    }


def histogram_from_json(value: Mapping[str, Any], *, positive_label: int) -> ScoreHistogram:
    """A histogram read back from ``curves.json``."""
    return ScoreHistogram(
        positive_label=positive_label,
        positives=np.asarray(value["positives"], dtype=np.int64),
        negatives=np.asarray(value["negatives"], dtype=np.int64),
    )


def confusion_json(histogram: ScoreHistogram, threshold: Threshold) -> dict[str, Any]:
    """Confusion counts and rates at ``threshold``."""
    r = rates_at(histogram, threshold.bin)
    return {
        "tp": r.tp,
        "fn": r.fn,
        "fp": r.fp,
        "tn": r.tn,
        "sensitivity": None if np.isnan(r.sensitivity) else r.sensitivity,
        "specificity": None if np.isnan(r.specificity) else r.specificity,
    }
