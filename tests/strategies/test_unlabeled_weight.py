"""Counting unlabeled images in aggregation: UnlabeledWeight around any strategy."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flmi.core.keys import TrainMetric
from flmi.core.messages import ClientUpdate
from flmi.strategies.fedavg import FedAvg
from flmi.strategies.unlabeled_weight import UnlabeledWeight, reweighted
from tests.strategies.support import HPARAMS, site_updates, update, vec, zeros


def _semi(u: ClientUpdate, labeled: int, unlabeled: int) -> ClientUpdate:
    metrics = {TrainMetric.NUM_LABELED.value: labeled, TrainMetric.NUM_UNLABELED.value: unlabeled}
    return replace(u, num_examples=labeled + unlabeled, metrics=metrics)


def test_an_unlabeled_image_counts_the_chosen_share_of_a_labeled_one() -> None:
    labeled = update("a", vec(0.0), 100)
    unlabeled = _semi(update("b", vec(1.0)), labeled=0, unlabeled=100)
    strategy = UnlabeledWeight(inner=FedAvg(hparams=HPARAMS), weight=0.25)
    _, params = strategy.aggregate(1, strategy.init(vec(0.0)), [labeled, unlabeled])
    np.testing.assert_allclose(params["w"], [25 / 125])  # 100 labeled vs 0.25 * 100 unlabeled
    assert reweighted(_semi(update("c", vec(0.0)), 10, 4), weight=0.5).num_examples == 12
    assert reweighted(_semi(update("c", vec(0.0)), 0, 1), weight=0.1).num_examples == 1
    assert reweighted(labeled, weight=0.1) is labeled  # a labeled-only update is untouched


@settings(max_examples=30, deadline=None)
@given(updates=site_updates(), split=st.lists(st.floats(0, 1), min_size=6, max_size=6))
def test_weight_one_changes_nothing_and_order_does_not_matter(
    updates: list[ClientUpdate], split: list[float]
) -> None:
    semi = [
        _semi(
            u,
            labeled=round(u.num_examples * f),
            unlabeled=u.num_examples - round(u.num_examples * f),
        )
        for u, f in zip(updates, split, strict=False)
    ]
    inner = FedAvg(hparams=HPARAMS)
    wrapped = UnlabeledWeight(inner=FedAvg(hparams=HPARAMS), weight=1.0)
    _, expected = inner.aggregate(1, inner.init(zeros()), semi)
    _, same = wrapped.aggregate(1, wrapped.init(zeros()), semi)
    _, reversed_order = wrapped.aggregate(1, wrapped.init(zeros()), semi[::-1])
    for k in expected:
        np.testing.assert_array_equal(same[k], expected[k])
        np.testing.assert_array_equal(reversed_order[k], expected[k])


def test_a_weight_outside_zero_to_one_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="federation.unlabeled_weight"):
        UnlabeledWeight(inner=FedAvg(hparams=HPARAMS), weight=0.0)
