"""The registry: names, typed options with defaults and help, range checks, linearity."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flmi.core.errors import ConfigError
from flmi.core.messages import ClientUpdate, UpdateKind
from flmi.strategies.base import AggregatesUpdates
from flmi.strategies.registry import STRATEGIES, BuildContext, build_strategy
from tests.strategies.support import HPARAMS, params_of_shapes, update, zeros

EXPECTED = {
    "fedavg",
    "fedprox",
    "ditto",
    "fedbn",
    "fedpxn",
    "scaffold",
    "cyclic",
    "ifca",
    "cusfl",
    "finetune",
    "fednorm",
    "fedavgm",
    "fedadam",
    "fedyogi",
    "fedadagrad",
    "fednova",
    "median",
    "trimmed_mean",
    "krum",
    "geometric_median",
    "feddyn",
    "moon",
}
LINEAR = {
    "fedavg",
    "fedprox",
    "ditto",
    "fedbn",
    "fedpxn",
    "cusfl",
    "finetune",
    "fednorm",
    "scaffold",
    "fedavgm",
    "fedadam",
    "fedyogi",
    "fedadagrad",
    "fednova",
    "feddyn",
    "moon",
}


def test_every_expected_strategy_is_registered() -> None:
    assert set(STRATEGIES) == EXPECTED


# FedNorm needs every site's modality group; every site here is in one group.
CONTEXT = BuildContext(site_groups={f"s{i}": "g" for i in range(10)})


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_strategy_builds_with_its_defaults_under_its_own_name(name: str) -> None:
    strategy = build_strategy(name=name, hparams=HPARAMS, options={}, context=CONTEXT)
    assert strategy.name == name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_option_has_a_type_a_default_of_that_type_and_a_help_line(name: str) -> None:
    spec = STRATEGIES[name]
    assert spec.option_types() == {k: o.type for k, o in spec.options.items()}
    for key, option in spec.options.items():
        assert option.type in (bool, int, float, str), key
        assert type(option.default) is option.type, key
        assert option.help and "\n" not in option.help, key


def test_the_documented_defaults() -> None:
    assert STRATEGIES["fedavgm"].defaults() == {"server_lr": 1.0, "server_momentum": 0.9}
    assert STRATEGIES["fedadam"].defaults() == {
        "server_lr": 0.01,
        "beta1": 0.9,
        "beta2": 0.99,
        "tau": 1e-3,
    }
    assert STRATEGIES["fedadagrad"].defaults() == {"server_lr": 0.1, "beta1": 0.9, "tau": 1e-3}
    assert STRATEGIES["median"].defaults() == {"weighting": "examples", "max_weight_share": 0.3}
    assert STRATEGIES["trimmed_mean"].defaults() == {
        "trim_fraction": 0.2,
        "weighting": "examples",
        "max_weight_share": 0.3,
    }
    assert STRATEGIES["krum"].defaults() == {"num_byzantine": 1, "num_selected": 1}
    assert STRATEGIES["geometric_median"].defaults() == {
        "max_iter": 100,
        "eps": 1e-6,
        "weighting": "examples",
        "max_weight_share": 0.3,
    }


def test_resolve_options_fills_defaults_and_accepts_an_integer_for_a_float() -> None:
    resolved = STRATEGIES["fedadam"].resolve_options({"server_lr": 1})
    assert resolved == {"server_lr": 1.0, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3}
    assert type(resolved["server_lr"]) is float


@pytest.mark.parametrize(
    ("name", "key", "value", "expected"),
    [
        ("fedadam", "beta1", "0.9", "a number"),
        ("fedavgm", "server_lr", True, "a number"),
        ("krum", "num_byzantine", 1.5, "an integer"),
    ],
)
def test_a_value_of_the_wrong_type_names_the_key(
    name: str, key: str, value: Any, expected: str
) -> None:
    with pytest.raises(ConfigError, match=rf"strategy\.{key}: expected {expected}"):
        build_strategy(name=name, hparams=HPARAMS, options={key: value})


def test_an_unknown_option_is_refused_listing_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'strategy\.mu'.*beta1"):
        build_strategy(name="fedadam", hparams=HPARAMS, options={"mu": 0.1})


def test_an_unknown_strategy_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown strategy 'fedfoo'.*fedadam"):
        build_strategy(name="fedfoo", hparams=HPARAMS, options={})


@pytest.mark.parametrize(
    ("name", "key", "value"),
    [
        ("fedavgm", "server_lr", 0.0),
        ("fedavgm", "server_momentum", 1.0),
        ("fedadam", "server_lr", -0.1),
        ("fedadam", "beta1", 1.0),
        ("fedadam", "beta2", 1.5),
        ("fedadam", "tau", 0.0),
        ("fedyogi", "beta2", -0.5),
        ("fedyogi", "tau", -1.0),
        ("fedadagrad", "beta1", -0.01),
        ("fedadagrad", "tau", 0),
        ("trimmed_mean", "trim_fraction", 0.5),
        ("trimmed_mean", "trim_fraction", -0.1),
        ("trimmed_mean", "weighting", "sites"),
        ("trimmed_mean", "max_weight_share", 0.0),
        ("median", "weighting", "weighted"),
        ("median", "max_weight_share", 1.01),
        ("krum", "num_byzantine", -1),
        ("krum", "num_selected", 0),
        ("geometric_median", "max_iter", 0),
        ("geometric_median", "eps", 0.0),
        ("geometric_median", "weighting", "size"),
        ("geometric_median", "max_weight_share", 1.5),
    ],
)
def test_out_of_range_values_raise_a_config_error_naming_the_key(
    name: str, key: str, value: Any
) -> None:
    with pytest.raises(ConfigError, match=rf"strategy\.{key} must be"):
        build_strategy(name=name, hparams=HPARAMS, options={key: value})


def test_linearity_flags_match_the_secure_aggregation_note() -> None:
    assert {name for name, spec in STRATEGIES.items() if spec.linear} == LINEAR


def test_krum_needs_2f_plus_3_updates_and_others_one() -> None:
    krum = STRATEGIES["krum"]
    assert krum.min_updates(krum.defaults()) == 5
    assert krum.min_updates({"num_byzantine": 2, "num_selected": 1}) == 7
    assert krum.min_updates({"num_byzantine": 0, "num_selected": 4}) == 4
    assert STRATEGIES["median"].min_updates({}) == 1


def _delta_aggregate(name: str, updates: list[ClientUpdate]) -> dict[str, np.ndarray]:
    strategy = build_strategy(name=name, hparams=HPARAMS, options={}, context=CONTEXT)
    assert isinstance(strategy, AggregatesUpdates)
    return dict(strategy.aggregate_updates(1, strategy.init(zeros()), updates))


@pytest.mark.parametrize("name", sorted(LINEAR))
@settings(max_examples=25, deadline=None)
@given(
    first=st.lists(params_of_shapes(), min_size=1, max_size=5),
    data=st.data(),
    factor=st.floats(-3, 3),
)
def test_linear_strategies_aggregate_deltas_linearly(
    name: str, first: list[dict[str, np.ndarray]], data: st.DataObject, factor: float
) -> None:
    # Same sites, counts and steps: agg(a + c * b) = agg(a) + c * agg(b) (from a zero model).
    second = [data.draw(params_of_shapes()) for _ in first]
    counts = [data.draw(st.integers(1, 100)) for _ in first]
    steps = [data.draw(st.integers(1, 5)) for _ in first]

    def updates(tensors: list[dict[str, np.ndarray]]) -> list[ClientUpdate]:
        return [
            update(f"s{i}", t, n, kind=UpdateKind.DELTA, steps=k)
            for i, (t, n, k) in enumerate(zip(tensors, counts, steps, strict=True))
        ]

    mixed = [{k: a[k] + factor * b[k] for k in a} for a, b in zip(first, second, strict=True)]
    a, b = _delta_aggregate(name, updates(first)), _delta_aggregate(name, updates(second))
    both = _delta_aggregate(name, updates(mixed))
    for k in both:
        np.testing.assert_allclose(both[k], a[k] + factor * b[k], rtol=1e-9, atol=1e-8)


@pytest.mark.parametrize("name", sorted(EXPECTED - LINEAR - {"cyclic", "ifca"}))
def test_robust_strategies_are_not_linear(name: str) -> None:
    # Five constant updates, a = 0 1 2 3 50 and b = 5 0 0 0 9. Median: 2 + 0, but the
    # median of a + b = 5 1 2 3 59 is 3; the others break additivity on the same data.
    a = [
        {"conv.weight": np.full((2, 3), float(v)), "head.bias": np.zeros(4)}
        for v in (0, 1, 2, 3, 50)
    ]
    b = [
        {"conv.weight": np.full((2, 3), float(v)), "head.bias": np.zeros(4)}
        for v in (5, 0, 0, 0, 9)
    ]
    mixed = [{k: x[k] + y[k] for k in x} for x, y in zip(a, b, strict=True)]

    def deltas(tensors: list[dict[str, np.ndarray]]) -> list[ClientUpdate]:
        return [update(f"s{i}", t, kind=UpdateKind.DELTA) for i, t in enumerate(tensors)]

    sum_of = (
        _delta_aggregate(name, deltas(a))["conv.weight"]
        + _delta_aggregate(name, deltas(b))["conv.weight"]
    )
    of_sum = _delta_aggregate(name, deltas(mixed))["conv.weight"]
    assert not np.allclose(of_sum, sum_of)
