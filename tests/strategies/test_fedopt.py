"""FedAvgM, FedAdam, FedYogi and FedAdagrad: hand-worked steps and properties."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flmi.core.errors import ConfigError
from flmi.core.messages import ClientUpdate, UpdateKind
from flmi.strategies.base import ComposedStrategy
from flmi.strategies.fedavg import FedAvg
from flmi.strategies.fedopt import (
    AdagradOptions,
    AdaptiveOptions,
    FedAdagrad,
    FedAdam,
    FedAvgM,
    FedYogi,
    MomentumOptions,
)
from tests.strategies.support import (
    HPARAMS,
    assert_close,
    assert_same_bits,
    copies_of,
    permuted,
    scaled,
    site_updates,
    update,
    vec,
    zeros,
)

# One round shared by the adaptive tests: global x = [1, 2]; site a sends
# [2, 1] with 3 examples, site b sends [0, 3] with 1; the example-weighted mean
# is [(3*2 + 0)/4, (3*1 + 3)/4] = [1.5, 1.5], so Delta = mean - x = [0.5, -0.5].
X0 = (1.0, 2.0)
ROUND_1 = [update("a", vec(2.0, 1.0), 3), update("b", vec(0.0, 3.0), 1)]
ADAPTIVE = AdaptiveOptions(server_lr=0.1, beta1=0.9, beta2=0.99, tau=0.01)


def test_fedadam_one_step_worked_by_hand() -> None:
    strategy = FedAdam(hparams=HPARAMS, options=ADAPTIVE)
    state = strategy.init(vec(*X0))
    # v starts at tau^2 = 1e-4, m at 0.
    # m = 0.1 * 0.5 = 0.05 (and -0.05)
    # v = 0.99 * 1e-4 + 0.01 * 0.25 = 0.002599
    # step = 0.1 * 0.05 / (sqrt(0.002599) + 0.01) = 0.005 / 0.0609803884 = 0.0819935742
    new_state, params = strategy.aggregate(1, state, ROUND_1)
    np.testing.assert_allclose(params["w"], [1.0819935742, 1.9180064258], rtol=1e-10)
    np.testing.assert_allclose(new_state.rule.m["w"], [0.05, -0.05], rtol=1e-12)
    np.testing.assert_allclose(new_state.rule.v["w"], [0.002599, 0.002599], rtol=1e-12)


def test_fedyogi_two_steps_worked_by_hand_follow_the_sign_rule() -> None:
    strategy = FedYogi(hparams=HPARAMS, options=ADAPTIVE)
    state = strategy.init(vec(*X0))
    # Round 1: v_0 = 1e-4 < Delta^2 = 0.25, so sign(v - Delta^2) = -1 and v grows:
    # v = 1e-4 + 0.01 * 0.25 = 0.0026; m = 0.05;
    # step = 0.1 * 0.05 / (sqrt(0.0026) + 0.01) = 0.005 / 0.0609901951 = 0.0819803903
    state, params = strategy.aggregate(1, state, ROUND_1)
    np.testing.assert_allclose(params["w"], [1.0819803903, 1.9180196097], rtol=1e-10)
    np.testing.assert_allclose(state.rule.v["w"], [0.0026, 0.0026], rtol=1e-12)
    # Round 2: every site sends x + [0.01, -0.01]; now v = 0.0026 > Delta^2 = 1e-4,
    # so the sign is +1 and v shrinks additively (Adam would give 0.00257401):
    # v = 0.0026 - 0.01 * 1e-4 = 0.002599
    # m = 0.9 * 0.05 + 0.1 * 0.01 = 0.046
    # step = 0.1 * 0.046 / (sqrt(0.002599) + 0.01) = 0.0046 / 0.0609803884 = 0.0754340883
    x1 = params["w"]
    second = [update(s, {"w": x1 + np.array([0.01, -0.01])}, 2) for s in ("a", "b")]
    state, params = strategy.aggregate(2, state, second)
    np.testing.assert_allclose(state.rule.v["w"], [0.002599, 0.002599], rtol=1e-9)
    np.testing.assert_allclose(state.rule.m["w"], [0.046, -0.046], rtol=1e-9)
    np.testing.assert_allclose(params["w"], x1 + np.array([0.0754340883, -0.0754340883]), rtol=1e-9)


def test_fedadagrad_one_step_worked_by_hand_accumulates_v() -> None:
    options = AdagradOptions(server_lr=0.1, beta1=0.9, tau=0.01)
    strategy = FedAdagrad(hparams=HPARAMS, options=options)
    state = strategy.init(vec(*X0))
    # v = 1e-4 + 0.25 = 0.2501 (no decay); m = 0.05
    # step = 0.1 * 0.05 / (sqrt(0.2501) + 0.01) = 0.005 / 0.5100999900 = 0.0098019998
    state, params = strategy.aggregate(1, state, ROUND_1)
    np.testing.assert_allclose(params["w"], [1.0098019998, 1.9901980002], rtol=1e-10)
    np.testing.assert_allclose(state.rule.v["w"], [0.2501, 0.2501], rtol=1e-12)
    # A second round with the same Delta adds another 0.25: v = 0.5001.
    x1 = params["w"]
    again = [update(s, {"w": x1 + np.array([0.5, -0.5])}, 1) for s in ("a", "b")]
    state, _ = strategy.aggregate(2, state, again)
    np.testing.assert_allclose(state.rule.v["w"], [0.5001, 0.5001], rtol=1e-9)


def test_fedavgm_two_rounds_worked_by_hand() -> None:
    strategy = FedAvgM(hparams=HPARAMS, options=MomentumOptions(server_lr=0.5, server_momentum=0.9))
    state = strategy.init(vec(0.0))
    # Round 1: aggregate -2, pseudo-gradient g = 0 - (-2) = 2, v = 2, x = 0 - 0.5 * 2 = -1.
    state, params = strategy.aggregate(1, state, [update("a", vec(-2.0), 4)])
    np.testing.assert_allclose(params["w"], [-1.0])
    np.testing.assert_allclose(state.rule.velocity["w"], [2.0])
    # Round 2: aggregate -2 again, g = -1 - (-2) = 1, v = 0.9 * 2 + 1 = 2.8,
    # x = -1 - 0.5 * 2.8 = -2.4.
    state, params = strategy.aggregate(2, state, [update("a", vec(-2.0), 4)])
    np.testing.assert_allclose(params["w"], [-2.4])
    np.testing.assert_allclose(state.rule.velocity["w"], [2.8])


def test_fedavgm_with_lr_one_and_no_momentum_is_fedavg() -> None:
    momentum = FedAvgM(hparams=HPARAMS, options=MomentumOptions(server_lr=1.0, server_momentum=0))
    plain = FedAvg(hparams=HPARAMS)
    _, a = momentum.aggregate(1, momentum.init(vec(*X0)), ROUND_1)
    _, b = plain.aggregate(1, plain.init(vec(*X0)), ROUND_1)
    np.testing.assert_allclose(a["w"], b["w"], rtol=1e-15)


@pytest.mark.parametrize("kind", [FedAdam, FedYogi, FedAdagrad, FedAvgM])
def test_deltas_and_full_weights_give_the_same_step(kind: Any) -> None:
    strategy = kind(hparams=HPARAMS)
    state = strategy.init(vec(*X0))
    deltas = [
        update(u.site, {"w": u.params["w"] - np.array(X0)}, u.num_examples, kind=UpdateKind.DELTA)
        for u in ROUND_1
    ]
    _, full = strategy.aggregate(1, state, ROUND_1)
    _, delta = strategy.aggregate(1, state, deltas)
    np.testing.assert_allclose(full["w"], delta["w"], rtol=1e-14)


def test_float32_weights_stay_float32_and_moments_are_float64() -> None:
    strategy = FedAdam(hparams=HPARAMS)
    state = strategy.init({"w": np.ones(3, dtype=np.float32)})
    state, params = strategy.aggregate(1, state, [update("a", {"w": np.zeros(3, np.float32)})])
    assert params["w"].dtype == np.float32
    assert state.rule.m["w"].dtype == np.float64 and state.rule.v["w"].dtype == np.float64


def test_adaptive_state_survives_a_record_round_trip() -> None:
    strategy = FedYogi(hparams=HPARAMS)
    state, _ = strategy.aggregate(1, strategy.init(vec(*X0)), ROUND_1)
    record = strategy.state_to_record(state)
    assert sorted(record.tensors) == ["m/w", "params/w", "v/w"]
    restored = strategy.state_from_record(record)
    assert_same_bits(restored.rule.m, state.rule.m)
    assert_same_bits(restored.rule.v, state.rule.v)
    assert_same_bits(restored.params, state.params)


@pytest.mark.parametrize(
    ("make", "key"),
    [
        (lambda: MomentumOptions(server_lr=0.0), "server_lr"),
        (lambda: MomentumOptions(server_momentum=1.0), "server_momentum"),
        (lambda: AdaptiveOptions(server_lr=-1.0), "server_lr"),
        (lambda: AdaptiveOptions(server_lr=float("inf")), "server_lr"),
        (lambda: AdaptiveOptions(beta1=1.0), "beta1"),
        (lambda: AdaptiveOptions(beta2=-0.1), "beta2"),
        (lambda: AdaptiveOptions(tau=0.0), "tau"),
        (lambda: AdagradOptions(tau=float("nan")), "tau"),
    ],
)
def test_out_of_range_options_raise_a_config_error_naming_the_key(make: Any, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"strategy\.{key} must be"):
        make()


# -- properties, for every server optimiser ------------------------------------------------------

SERVER_OPTIMISERS = {
    "fedavgm": lambda: FedAvgM(hparams=HPARAMS),
    "fedadam": lambda: FedAdam(hparams=HPARAMS),
    "fedyogi": lambda: FedYogi(hparams=HPARAMS),
    "fedadagrad": lambda: FedAdagrad(hparams=HPARAMS),
}


@pytest.mark.parametrize("name", sorted(SERVER_OPTIMISERS))
@settings(max_examples=30, deadline=None)
@given(updates=site_updates(), seed=st.integers(0, 2**32 - 1))
def test_order_of_sites_does_not_change_the_step(
    name: str, updates: list[ClientUpdate], seed: int
) -> None:
    strategy: ComposedStrategy[Any] = SERVER_OPTIMISERS[name]()
    state = strategy.init(zeros())
    state_a, a = strategy.aggregate(1, state, updates)
    state_b, b = strategy.aggregate(1, state, permuted(updates, seed))
    assert_same_bits(a, b)
    assert_same_bits(
        strategy.state_to_record(state_a).tensors, strategy.state_to_record(state_b).tensors
    )


@pytest.mark.parametrize("name", sorted(SERVER_OPTIMISERS))
@settings(max_examples=30, deadline=None)
@given(updates=site_updates(), counts=st.lists(st.integers(1, 1000), min_size=1, max_size=5))
def test_identical_updates_aggregate_to_that_update_before_the_server_step(
    name: str, updates: list[ClientUpdate], counts: list[int]
) -> None:
    strategy: ComposedStrategy[Any] = SERVER_OPTIMISERS[name]()
    same = copies_of(updates[0], counts)
    combined = strategy.aggregate_updates(1, strategy.init(zeros()), same)
    assert_close(combined, updates[0].params)


@pytest.mark.parametrize("name", sorted(SERVER_OPTIMISERS))
@settings(max_examples=30, deadline=None)
@given(
    params=site_updates(min_sites=1, max_sites=1),
    counts=st.lists(st.integers(1, 99), min_size=1, max_size=4),
)
def test_updates_equal_to_the_global_model_leave_it_unchanged(
    name: str, params: list[ClientUpdate], counts: list[int]
) -> None:
    strategy: ComposedStrategy[Any] = SERVER_OPTIMISERS[name]()
    start = params[0].params
    _, new = strategy.aggregate(1, strategy.init(start), copies_of(params[0], counts))
    assert_close(new, start, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(SERVER_OPTIMISERS))
@settings(max_examples=30, deadline=None)
@given(updates=site_updates(), factor=st.integers(2, 1000))
def test_scaling_all_example_counts_changes_nothing(
    name: str, updates: list[ClientUpdate], factor: int
) -> None:
    strategy: ComposedStrategy[Any] = SERVER_OPTIMISERS[name]()
    state = strategy.init(zeros())
    state_a, a = strategy.aggregate(1, state, updates)
    state_b, b = strategy.aggregate(1, state, scaled(updates, factor))
    assert_close(a, b)
    assert_close(
        strategy.state_to_record(state_a).tensors, strategy.state_to_record(state_b).tensors
    )
