"""A site's score histogram: counts of the positive class's probability, one-vs-rest."""

from __future__ import annotations

import numpy as np
import torch

from flmi.data.arrays import ArraySplit
from flmi.report.curves import bin_index
from flmi.tasks.classification import ClassificationTask


def test_multi_class_histogram_bins_the_positive_class_one_vs_rest() -> None:
    task = ClassificationTask(
        num_classes=3, in_channels=5, spatial_dims=0, positive_label=2, model="logistic"
    )
    model = task.build_model(seed=0)
    rng = np.random.default_rng(0)
    data = ArraySplit(
        x=rng.normal(size=(200, 5)).astype(np.float32), y=rng.integers(0, 3, 200).astype(np.int64)
    )

    h = task.score_histogram(model=model, data=data, device=torch.device("cpu"), bins=20)

    probs, _ = task.predict_proba(model=model, x=data.x, device=torch.device("cpu"))
    index = bin_index(probs[:, 2], 20)
    assert h.positive_label == 2 and h.bins == 20
    assert np.array_equal(h.positives, np.bincount(index[data.y == 2], minlength=20))
    assert np.array_equal(h.negatives, np.bincount(index[data.y != 2], minlength=20))


def test_an_empty_split_gives_an_empty_histogram() -> None:
    task = ClassificationTask(num_classes=2, in_channels=1, spatial_dims=2, positive_label=1)
    empty = ArraySplit(x=np.zeros((0, 1, 16, 16), np.float32), y=np.zeros(0, np.int64))

    h = task.score_histogram(
        model=task.build_model(seed=0), data=empty, device=torch.device("cpu"), bins=10
    )

    assert h.positives.sum() == h.negatives.sum() == 0 and h.bins == 10
