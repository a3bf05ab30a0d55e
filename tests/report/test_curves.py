"""ROC, AUC, confusion counts and thresholds from score histograms alone."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from flmi.core.messages import ScoreHistogram
from flmi.report.curves import (
    ThresholdMethod,
    auc_binning_bound,
    bin_index,
    calibration,
    choose_threshold,
    histogram_auc,
    rates_at,
    roc_points,
    score_histogram,
)
from flmi.report.operating import arm_curves
from flmi.tasks.metrics import binary_auc

BINS = 100


def _hist(scores: np.ndarray, positive: np.ndarray, bins: int = BINS) -> ScoreHistogram:
    return score_histogram(scores=scores, is_positive=positive, bins=bins, positive_label=1)


def test_histogram_auc_equals_monai_and_sklearn_when_scores_sit_at_bin_centres() -> None:
    rng = np.random.default_rng(0)
    positive = rng.random(400) < 0.3
    # Scores at bin centres: binning loses nothing, ties included.
    bins = rng.integers(0, BINS, size=400) + positive * rng.integers(0, 30, size=400)
    scores = (np.clip(bins, 0, BINS - 1) + 0.5) / BINS

    from_histogram = histogram_auc(_hist(scores, positive))

    assert from_histogram == pytest.approx(binary_auc(scores=scores, positive=positive), abs=1e-12)
    assert from_histogram == pytest.approx(roc_auc_score(positive, scores), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(2, 300),
    bins=st.sampled_from([10, 100, 1000]),
)
def test_histogram_auc_lies_within_its_binning_bound_of_the_exact_auc(
    seed: int, n: int, bins: int
) -> None:
    rng = np.random.default_rng(seed)
    positive = rng.random(n) < 0.5
    if positive.all() or not positive.any():
        positive[0] = not positive[0]
    scores = np.clip(rng.beta(2, 2, size=n) + 0.2 * positive, 0.0, 1.0)
    h = _hist(scores, positive, bins)

    gap = abs(histogram_auc(h) - roc_auc_score(positive, scores))

    assert gap <= auc_binning_bound(h) + 1e-12


def test_rates_at_a_threshold_match_counting_the_scores_directly() -> None:
    rng = np.random.default_rng(1)
    positive = rng.random(500) < 0.4
    scores = rng.random(500)
    h = _hist(scores, positive)
    for k in (0, 1, 37, 50, 99, 100):
        called = bin_index(scores, BINS) >= k
        r = rates_at(h, k)
        assert (r.tp, r.fn) == (int((called & positive).sum()), int((~called & positive).sum()))
        assert (r.fp, r.tn) == (int((called & ~positive).sum()), int((~called & ~positive).sum()))
        if 0 < k < BINS:  # away from 0 and 1, bin k starts at k / bins
            assert np.array_equal(called, scores >= k / BINS)


def test_roc_runs_from_the_origin_to_one_one() -> None:
    h = _hist(np.array([0.1, 0.4, 0.6, 0.9]), np.array([False, True, False, True]))
    fpr, tpr, thresholds = roc_points(h)
    assert (fpr[0], tpr[0], thresholds[0]) == (0.0, 0.0, 1.0)
    assert (fpr[-1], tpr[-1], thresholds[-1]) == (1.0, 1.0, 0.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)


def test_calibration_of_a_calibrated_model_follows_the_diagonal() -> None:
    rng = np.random.default_rng(2)
    scores = rng.random(200_000)
    positive = rng.random(200_000) < scores  # P(positive | score) = score
    curve = calibration(_hist(scores, positive), groups=10)
    assert np.allclose(curve["observed"], curve["predicted"], atol=0.01)
    assert sum(curve["count"]) == 200_000


def _separable(low: float, high: float, n: int = 50) -> ScoreHistogram:
    """Negatives just below ``low``, positives just above ``high``: Youden picks between."""
    neg = np.full(n, low - 0.005)
    pos = np.full(n, high + 0.005)
    return _hist(np.concatenate([neg, pos]), np.repeat([False, True], n))


def test_youden_threshold_is_chosen_on_validation_and_ignores_the_test_histograms() -> None:
    val = _separable(0.2, 0.3)  # every threshold in (0.2, 0.3] separates validation perfectly
    test = _separable(0.7, 0.8)  # on test only thresholds in (0.7, 0.8] would

    curves = arm_curves(
        test_per_site={"a": test},
        val_per_site={"a": val},
        test_central=test,
        bins=BINS,
        target_sensitivity=None,
    )

    t = curves.threshold
    assert t.method == ThresholdMethod.YOUDEN and t.chosen_on == "val"
    assert 0.2 < t.value <= 0.3  # a test-chosen threshold would lie in (0.7, 0.8]
    assert (t.val_sensitivity, t.val_specificity) == (1.0, 1.0)


def test_target_sensitivity_takes_the_highest_threshold_that_reaches_it() -> None:
    scores = np.arange(10) / 10 + 0.05  # one positive in each tenth
    h = _hist(scores, np.ones(10, dtype=bool)) + _hist(np.array([0.01]), np.array([False]))

    t = choose_threshold(val=h, bins=BINS, target_sensitivity=0.8)

    assert t.method == ThresholdMethod.TARGET_SENSITIVITY
    assert t.val_sensitivity == pytest.approx(0.8)
    assert t.value == pytest.approx(0.25)  # bins 25..99 hold the top 8 positives


def test_without_validation_data_the_threshold_falls_back_to_one_half_and_says_so() -> None:
    test = _separable(0.7, 0.8)
    empty = _hist(np.zeros(0), np.zeros(0, dtype=bool))

    curves = arm_curves(
        test_per_site={"a": test},
        val_per_site={"a": empty},
        test_central=test,
        bins=BINS,
        target_sensitivity=None,
    )

    t = curves.threshold
    assert (t.value, t.method, t.chosen_on) == (0.5, ThresholdMethod.DEFAULT, "none")
    assert "no validation split" in t.note


def test_histograms_of_different_bins_refuse_to_add() -> None:
    with pytest.raises(ValueError, match="10 and 100 bins"):
        _ = _hist(np.array([0.5]), np.array([True]), 10) + _hist(np.array([0.5]), np.array([True]))
