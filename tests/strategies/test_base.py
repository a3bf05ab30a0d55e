"""The composed shape: validation, composition of parts, and the state record."""

from __future__ import annotations

import numpy as np
import pytest

from flmi.core.errors import SchemaError
from flmi.core.messages import UpdateKind
from flmi.core.strategy import StateRecord
from flmi.strategies.base import (
    AggregatesUpdates,
    ComposedStrategy,
    NoState,
    Replace,
    ServerState,
    WeightedMean,
)
from flmi.strategies.fedavg import FedAvg, FedAvgState
from flmi.strategies.fedopt import FedAvgM, MomentumOptions, ServerMomentum
from flmi.strategies.robust import CoordinateMedian
from tests.strategies.support import HPARAMS, update, vec


def test_fedavg_is_a_weighted_mean_followed_by_replace() -> None:
    composed = ComposedStrategy(
        name="fedavg", hparams=HPARAMS, aggregator=WeightedMean(), rule=Replace()
    )
    fedavg = FedAvg(hparams=HPARAMS)
    updates = [update("b", vec(1.0, 3.0), 7), update("a", vec(0.5, -1.0), 2)]
    _, a = composed.aggregate(1, composed.init(vec(0.0, 0.0)), updates)
    _, b = fedavg.aggregate(1, fedavg.init(vec(0.0, 0.0)), updates)
    assert a["w"].tobytes() == b["w"].tobytes()


def test_fedavg_state_keeps_its_public_name_and_params_field() -> None:
    state = FedAvg(hparams=HPARAMS).init(vec(1.0))
    assert isinstance(state, ServerState) and isinstance(state.rule, NoState)
    assert FedAvgState is not None and state.params["w"][0] == 1.0


def test_a_robust_aggregator_composes_with_server_momentum() -> None:
    strategy = ComposedStrategy(
        name="median_momentum",
        hparams=HPARAMS,
        aggregator=CoordinateMedian(),
        rule=ServerMomentum(options=MomentumOptions(server_lr=0.5, server_momentum=0.9)),
    )
    # median of 1, 2, 100 is 2; g = 0 - 2 = -2; v = -2; x = 0 - 0.5 * -2 = 1
    updates = [update("a", vec(1.0)), update("b", vec(2.0)), update("c", vec(100.0))]
    state = strategy.init(vec(0.0))
    assert strategy.aggregate_updates(1, state, updates)["w"][0] == 2.0
    state, params = strategy.aggregate(1, state, updates)
    np.testing.assert_allclose(params["w"], [1.0])
    np.testing.assert_allclose(state.rule.velocity["w"], [-2.0])


def test_composed_strategies_expose_the_aggregate_before_the_server_step() -> None:
    assert isinstance(FedAvgM(hparams=HPARAMS), AggregatesUpdates)


def test_aggregate_leaves_the_state_it_was_given_unchanged() -> None:
    strategy = FedAvgM(hparams=HPARAMS)
    state = strategy.init(vec(1.0, 2.0))
    before = {k: v.copy() for k, v in strategy.state_to_record(state).tensors.items()}
    strategy.aggregate(1, state, [update("a", vec(5.0, 5.0))])
    after = strategy.state_to_record(state).tensors
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_no_updates_is_an_error() -> None:
    strategy = FedAvg(hparams=HPARAMS)
    with pytest.raises(ValueError, match="round 3: fedavg needs at least one update"):
        strategy.aggregate(3, strategy.init(vec(0.0)), [])


def test_two_updates_from_one_site_are_refused() -> None:
    strategy = FedAvg(hparams=HPARAMS)
    with pytest.raises(ValueError, match="two updates from site 'a'"):
        strategy.aggregate(1, strategy.init(vec(0.0)), [update("a", vec(1.0))] * 2)


def test_mixed_update_kinds_are_refused() -> None:
    strategy = FedAvg(hparams=HPARAMS)
    updates = [update("a", vec(1.0)), update("b", vec(1.0), kind=UpdateKind.DELTA)]
    with pytest.raises(ValueError, match="mix kinds"):
        strategy.aggregate(1, strategy.init(vec(0.0)), updates)


def test_an_update_claiming_no_examples_is_refused_naming_the_site() -> None:
    strategy = FedAvg(hparams=HPARAMS)
    with pytest.raises(ValueError, match="site 'a' claims 0 examples"):
        strategy.aggregate(1, strategy.init(vec(0.0)), [update("a", vec(1.0), 0)])


def test_a_wrong_dtype_is_refused_naming_the_tensor() -> None:
    strategy = FedAvg(hparams=HPARAMS)
    bad = update("a", {"w": np.zeros(1, dtype=np.float32)})
    with pytest.raises(SchemaError, match="tensor 'w' has dtype float32"):
        strategy.aggregate(1, strategy.init(vec(0.0)), [bad])


def test_state_record_names_params_and_rule_slots_and_the_strategy() -> None:
    strategy = FedAvgM(hparams=HPARAMS)
    record = strategy.state_to_record(strategy.init({"conv.weight": np.zeros(2)}))
    assert sorted(record.tensors) == ["params/conv.weight", "velocity/conv.weight"]
    assert dict(record.meta) == {"strategy": "fedavgm", "format": 1}


def test_a_record_written_before_server_rules_existed_still_loads() -> None:
    strategy = FedAvg(hparams=HPARAMS)
    state = strategy.state_from_record(StateRecord(tensors={"w": np.arange(3.0)}))
    np.testing.assert_array_equal(state.params["w"], [0.0, 1.0, 2.0])


def test_a_record_of_another_strategy_is_refused() -> None:
    record = FedAvg(hparams=HPARAMS).state_to_record(FedAvg(hparams=HPARAMS).init(vec(0.0)))
    with pytest.raises(ValueError, match="written by strategy 'fedavg', not 'fedavgm'"):
        FedAvgM(hparams=HPARAMS).state_from_record(record)


def test_a_record_missing_a_rule_slot_is_refused() -> None:
    record = StateRecord(
        tensors={"params/w": np.zeros(1)}, meta={"strategy": "fedavgm", "format": 1}
    )
    with pytest.raises(ValueError, match="no 'velocity/...' tensors"):
        FedAvgM(hparams=HPARAMS).state_from_record(record)


def test_a_record_slot_of_the_wrong_shape_is_refused_naming_the_tensor() -> None:
    record = StateRecord(
        tensors={"params/w": np.zeros(2), "velocity/w": np.zeros(3)},
        meta={"strategy": "fedavgm", "format": 1},
    )
    with pytest.raises(SchemaError, match="tensor 'w' has shape"):
        FedAvgM(hparams=HPARAMS).state_from_record(record)


def test_a_record_of_an_unknown_format_is_refused() -> None:
    record = StateRecord(tensors={}, meta={"strategy": "fedavg", "format": 99})
    with pytest.raises(ValueError, match="format 99"):
        FedAvg(hparams=HPARAMS).state_from_record(record)
