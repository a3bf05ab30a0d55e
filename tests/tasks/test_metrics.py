from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.metrics.rocauc import compute_roc_auc

from flmi.tasks.metrics import binary_auc, classification_metrics


def test_binary_auc_worked_by_hand() -> None:
    # positives 0.35 and 0.8 against negatives 0.1 and 0.4: 3 of 4 pairs ordered right
    auc = binary_auc(
        scores=np.array([0.1, 0.4, 0.35, 0.8]), positive=np.array([False, False, True, True])
    )
    assert auc == pytest.approx(0.75)


def test_auc_is_nan_when_only_one_class_is_present() -> None:
    assert math.isnan(binary_auc(scores=np.array([0.1, 0.9]), positive=np.array([True, True])))


def test_sensitivity_refers_to_the_configured_positive_label() -> None:
    # label 0 is "malignant" (the positive class), as in BreastMNIST
    labels = np.array([0, 0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.6, 0.4]])
    m = classification_metrics(labels=labels, probs=probs, loss=0.5, positive_label=0)
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(1 / 2)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert m["loss"] == 0.5
    assert set(m) == {"loss", "accuracy", "balanced_accuracy", "auc", "sensitivity", "specificity"}


def test_binary_auc_is_the_same_whichever_class_is_positive() -> None:
    labels = np.array([0, 1, 1, 0, 1])
    p1 = np.array([0.2, 0.7, 0.4, 0.5, 0.9])
    probs = np.stack([1 - p1, p1], axis=1)
    a = classification_metrics(labels=labels, probs=probs, loss=0.0, positive_label=0)["auc"]
    b = classification_metrics(labels=labels, probs=probs, loss=0.0, positive_label=1)["auc"]
    assert a == pytest.approx(b)


def test_multiclass_auc_is_the_macro_mean_of_one_vs_rest() -> None:
    labels = np.array([0, 1, 2, 0, 1, 2])
    probs = np.eye(3)[labels] * 0.7 + 0.1  # perfectly ranked
    assert (
        classification_metrics(labels=labels, probs=probs, loss=0.0, positive_label=0)["auc"] == 1.0
    )


def test_binary_auc_counts_a_tied_pair_as_one_half() -> None:
    # pairs (pos, neg): (0.5, 0.5) tie -> 1/2, (0.5, 0.2) -> 1, (0.9, 0.5) -> 1, (0.9, 0.2) -> 1
    auc = binary_auc(
        scores=np.array([0.5, 0.9, 0.5, 0.2]), positive=np.array([True, True, False, False])
    )
    assert auc == pytest.approx(3.5 / 4)


@settings(max_examples=200, deadline=None)
@given(
    scores=st.lists(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]), min_size=2, max_size=40)
    | st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=2, max_size=40),
    data=st.data(),
)
def test_binary_auc_equals_monais_trapezoidal_auc_ties_included(
    scores: list[float], data: st.DataObject
) -> None:
    # Arrange: labels with both classes present, scores with many ties or none
    labels = data.draw(st.lists(st.booleans(), min_size=len(scores), max_size=len(scores)))
    positive = np.array(labels)
    if positive.all() or not positive.any():
        positive[0] = not positive[0]
    x = np.array(scores, dtype=np.float64)

    # Act
    ours = binary_auc(scores=x, positive=positive)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = float(
            compute_roc_auc(torch.from_numpy(x), torch.from_numpy(positive.astype(np.int64)))
        )  # type: ignore[arg-type]

    # Assert
    assert ours == pytest.approx(theirs, abs=1e-12)
