"""A site's score histogram leaves it with no cell of 1 to min_count - 1 patients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flmi.core.messages import EvaluateInstruction, EvaluateResult, ScoreHistogram
from flmi.data.arrays import ArraySplit, SiteSplits
from flmi.report.curves import histogram_auc, roc_points, score_histogram
from flmi.site.site import Site, SitePolicy
from flmi.site.small_cells import merge_small_cells
from flmi.tasks.classification import ClassificationTask
from flmi.tasks.torch_params import params_copy


def _histogram(positives: list[int], negatives: list[int]) -> ScoreHistogram:
    return ScoreHistogram(
        positive_label=1,
        positives=np.array(positives, dtype=np.int64),
        negatives=np.array(negatives, dtype=np.int64),
    )


def test_a_bin_holding_one_patient_is_merged_with_its_neighbours_up_to_min_count() -> None:
    # 10 bins: 5 positives near 0.05, 5 negatives near 0.15, ONE positive at 0.35,
    # 5 negatives near 0.55, 5 positives near 0.75.
    scores = np.array([0.05] * 5 + [0.15] * 5 + [0.35] + [0.55] * 5 + [0.75] * 5)
    labels = np.array([1] * 5 + [0] * 5 + [1] + [0] * 5 + [1] * 5, dtype=bool)
    raw = score_histogram(scores=scores, is_positive=labels, bins=10, positive_label=1)
    assert raw.positives[3] == 1  # the lone patient, readable before suppression

    merged = merge_small_cells(raw, min_count=5)

    # Bins 0 and 1 pass alone; bins 2..9 form one group (1 + 5 positives, 5 negatives),
    # counted in its lowest bin, bin 2.
    assert merged is not None
    assert merged.positives.tolist() == [5, 0, 6, 0, 0, 0, 0, 0, 0, 0]
    assert merged.negatives.tolist() == [0, 5, 5, 0, 0, 0, 0, 0, 0, 0]


def test_roc_points_at_group_edges_are_exact_and_the_auc_is_that_of_rounded_scores() -> None:
    raw = _histogram([5, 0, 0, 1, 0, 0, 0, 5, 0, 0], [0, 5, 0, 0, 0, 5, 0, 0, 0, 0])

    merged = merge_small_cells(raw, min_count=5)

    assert merged is not None
    fpr_raw, tpr_raw, thresholds = roc_points(raw)
    fpr, tpr, _ = roc_points(merged)
    edges = [0.0, 0.1, 0.2, 1.0]  # the group edges: every ROC point there is unchanged
    at = [int(np.flatnonzero(np.isclose(thresholds, e))[0]) for e in edges]
    assert np.allclose(fpr[at], fpr_raw[at]) and np.allclose(tpr[at], tpr_raw[at])
    # Rounded scores: positives 5 x 0.0, 6 x 0.2; negatives 5 x 0.1, 5 x 0.2. Pairs won by
    # the positive: 6 x 5 (0.2 over 0.1); tied: 6 x 5 (both 0.2); of 11 x 10 pairs.
    assert histogram_auc(merged) == pytest.approx((30 + 0.5 * 30) / 110)


def test_a_split_with_fewer_than_min_count_negatives_sends_no_histogram() -> None:
    raw = _histogram([10, 10, 0], [0, 0, 1])

    assert merge_small_cells(raw, min_count=5) is None
    assert merge_small_cells(raw, min_count=1) is raw


def test_small_cells_at_the_top_are_pooled_down_into_the_group_below() -> None:
    raw = _histogram([5, 0, 0, 2], [5, 0, 0, 0])

    merged = merge_small_cells(raw, min_count=5)

    # Bin 3's 2 positives cannot pass on their own: they join group 0 (bins 0..3).
    assert merged is not None
    assert merged.positives.tolist() == [7, 0, 0, 0]
    assert merged.negatives.tolist() == [5, 0, 0, 0]


@settings(max_examples=200, deadline=None)
@given(
    cells=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=30),
    min_count=st.integers(1, 8),
)
def test_merged_cells_are_zero_or_at_least_min_count_and_keep_every_patient(
    cells: list[tuple[int, int]], min_count: int
) -> None:
    raw = _histogram([p for p, _ in cells], [n for _, n in cells])

    merged = merge_small_cells(raw, min_count=min_count)

    totals = (int(raw.positives.sum()), int(raw.negatives.sum()))
    if any(0 < t < min_count for t in totals):
        assert merged is None
        return
    assert merged is not None
    counts = np.concatenate([merged.positives, merged.negatives])
    assert not ((counts > 0) & (counts < min_count)).any()
    assert (int(merged.positives.sum()), int(merged.negatives.sum())) == totals
    # Patients only move down to their group's lowest bin, never up.
    for merged_counts, raw_counts in (
        (merged.positives, raw.positives),
        (merged.negatives, raw.negatives),
    ):
        assert (np.cumsum(merged_counts) >= np.cumsum(raw_counts)).all()


def _scored_site(min_count: int) -> Site:
    rng = np.random.default_rng(0)
    # 20 test patients of whom exactly 3 are labelled 1: too few to show at min_count 5.
    data = ArraySplit(
        x=rng.random((20, 1, 8, 8), dtype=np.float32),
        y=np.array([1, 1, 1] + [0] * 17, dtype=np.int64),
    )
    task = ClassificationTask(num_classes=2, in_channels=1, spatial_dims=2, positive_label=1)
    return Site(
        name="h1",
        data=SiteSplits(train=data, val=data, test=data),
        task=task,
        seed=0,
        device=torch.device("cpu"),
        policy=SitePolicy(min_count=min_count),
    )


def _evaluate(site: Site) -> EvaluateResult:
    model = ClassificationTask(num_classes=2, in_channels=1, spatial_dims=2, positive_label=1)
    params = params_copy(model.build_model(seed=1))
    result = site.evaluate(
        EvaluateInstruction(rnd=1, params=params, split="test", histogram_bins=10)
    )
    assert isinstance(result, EvaluateResult)
    return result


def test_a_site_withholds_its_histogram_when_a_class_has_fewer_than_its_min_count() -> None:
    shown, withheld = _evaluate(_scored_site(1)), _evaluate(_scored_site(5))

    assert shown.histogram is not None and int(shown.histogram.positives.sum()) == 3
    assert not shown.histogram_withheld
    assert withheld.histogram is None and withheld.histogram_withheld
    assert withheld.metrics["loss"] == shown.metrics["loss"]  # not a count: unchanged
    # 3 positives: every rate they determine is withheld as well (rate x 3 is a small count).
    for rate in ("sensitivity", "auc", "balanced_accuracy"):
        assert np.isnan(withheld.metrics[rate]) and not np.isnan(shown.metrics[rate])
