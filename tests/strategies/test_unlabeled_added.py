"""Adding the unlabeled sites' change to the labeled sites' aggregate (UnlabeledAdded)."""

from __future__ import annotations

import functools
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flmi.core.keys import TrainMetric
from flmi.core.messages import ClientUpdate, UpdateKind
from flmi.core.params import Params
from flmi.strategies.fedavg import FedAvg
from flmi.strategies.fedopt import FedAdam
from flmi.strategies.unlabeled_added import UnlabeledAdded, trained_without_labels
from flmi.testing import check_strategy
from tests.strategies.support import HPARAMS, params_of_shapes, site_updates, update, vec


def _unlabeled(u: ClientUpdate) -> ClientUpdate:
    metrics = {TrainMetric.NUM_LABELED.value: 0.0, TrainMetric.NUM_UNLABELED.value: 50.0}
    return replace(u, metrics=metrics)


def _wrapped(weight: float = 1.0) -> UnlabeledAdded:
    return UnlabeledAdded(inner=FedAvg(hparams=HPARAMS), weight=weight)


def test_the_unlabeled_change_is_added_to_the_labeled_mean_not_averaged_in() -> None:
    start = vec(0.0)
    labeled = [update("a", vec(1.0), 10), update("b", vec(3.0), 30)]  # mean 2.5
    unlabeled = [_unlabeled(update("c", vec(-1.0), 100)), _unlabeled(update("d", vec(1.0), 300))]
    strategy = _wrapped(weight=0.5)
    _, params = strategy.aggregate(1, strategy.init(start), [*labeled, *unlabeled])
    # 2.5 + 0.5 * (100 * -1 + 300 * 1) / 400; FedAvg would give (10+90-100+300)/440 = 0.68.
    np.testing.assert_allclose(params["w"], [2.5 + 0.5 * 0.5])


def test_only_unlabeled_updates_move_the_model_by_their_scaled_change() -> None:
    strategy = _wrapped(weight=0.25)
    state = strategy.init(vec(2.0))
    state, params = strategy.aggregate(1, state, [_unlabeled(update("c", vec(6.0), 5))])
    np.testing.assert_allclose(params["w"], [3.0])
    np.testing.assert_allclose(state.params["w"], [3.0])  # the state holds the new model


def test_deltas_are_added_as_sent() -> None:
    strategy = _wrapped(weight=1.0)
    updates = [
        update("a", vec(1.0), 1, kind=UpdateKind.DELTA),
        _unlabeled(update("b", vec(0.5), 9, kind=UpdateKind.DELTA)),
    ]
    _, params = strategy.aggregate(1, strategy.init(vec(10.0)), updates)
    np.testing.assert_allclose(params["w"], [11.5])


def test_a_labeled_update_is_one_without_a_zero_labeled_count() -> None:
    assert trained_without_labels(_unlabeled(update("a", vec(0.0))))
    assert not trained_without_labels(update("a", vec(0.0)))  # no counts: supervised
    mixed = replace(update("a", vec(0.0)), metrics={TrainMetric.NUM_LABELED.value: 3.0})
    assert not trained_without_labels(mixed)


@settings(max_examples=25, deadline=None)
@given(updates=site_updates(max_sites=5))
def test_without_unlabeled_sites_it_is_the_wrapped_rule_bit_for_bit(
    updates: list[ClientUpdate],
) -> None:
    start = {k: np.zeros_like(v) for k, v in updates[0].params.items()}
    inner = FedAvg(hparams=HPARAMS)
    _, expected = inner.aggregate(1, inner.init(start), updates)
    strategy = _wrapped(weight=0.3)
    _, got = strategy.aggregate(1, strategy.init(start), updates)
    for k in expected:
        np.testing.assert_array_equal(got[k], expected[k])


@settings(max_examples=25, deadline=None)
@given(
    labeled=site_updates(max_sites=3),
    unlabeled=site_updates(max_sites=3),
    start=params_of_shapes(),
    weight=st.floats(0.01, 1.0),
)
def test_the_result_is_the_labeled_mean_plus_the_scaled_unlabeled_mean_change(
    labeled: list[ClientUpdate], unlabeled: list[ClientUpdate], start: Params, weight: float
) -> None:
    unlabeled = [_unlabeled(replace(u, site=f"u_{u.site}")) for u in unlabeled]
    strategy = _wrapped(weight=weight)
    _, got = strategy.aggregate(1, strategy.init(start), [*unlabeled, *labeled])
    _, reordered = strategy.aggregate(1, strategy.init(start), [*labeled[::-1], *unlabeled])
    n_l = sum(u.num_examples for u in labeled)
    n_u = sum(u.num_examples for u in unlabeled)
    for k in start:
        mean_l = sum(u.num_examples * u.params[k] for u in labeled) / n_l
        mean_u = sum(u.num_examples * u.params[k] for u in unlabeled) / n_u
        expected = mean_l + weight * (mean_u - start[k])
        np.testing.assert_allclose(got[k], expected, rtol=1e-9, atol=1e-6)
        np.testing.assert_array_equal(got[k], reordered[k])  # arrival order does not matter


def test_it_passes_the_strategy_conformance_suite() -> None:
    check_strategy(functools.partial(_wrapped, weight=0.5), max_examples=10)


def test_around_a_server_optimiser_the_labeled_sites_drive_its_step() -> None:
    # FedAdam steps on the labeled sites' aggregate; the unlabeled change is added after.
    start = vec(0.0)
    labeled = [update("a", vec(1.0), 10)]
    unlabeled = [_unlabeled(update("b", vec(4.0), 10))]
    inner = FedAdam(hparams=HPARAMS)
    _, adam_only = inner.aggregate(1, inner.init(start), labeled)
    strategy = UnlabeledAdded(inner=FedAdam(hparams=HPARAMS), weight=0.5)
    state, params = strategy.aggregate(1, strategy.init(start), [*labeled, *unlabeled])
    np.testing.assert_allclose(params["w"], adam_only["w"] + 2.0)
    np.testing.assert_allclose(state.params["w"], params["w"])


def test_a_weight_outside_zero_to_one_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="federation.unlabeled_weight"):
        _wrapped(weight=0.0)
    with pytest.raises(ValueError, match="federation.unlabeled_weight"):
        _wrapped(weight=1.5)
