from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from flmi.core.errors import SchemaError
from flmi.core.messages import ClientUpdate, UpdateKind
from flmi.core.params import Params
from flmi.strategies.fedavg import FedAvg

HPARAMS = {"lr": 0.1, "batch_size": 8}
SHAPES = {"conv.weight": (2, 3), "head.bias": (4,)}
finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, width=64)


def _update(site: str, params: Params, n: int, kind: UpdateKind = UpdateKind.FULL) -> ClientUpdate:
    return ClientUpdate(
        site=site, params=params, kind=kind, num_examples=n, num_steps=1, metrics={}
    )


@st.composite
def site_updates(draw: st.DrawFn) -> list[ClientUpdate]:
    count = draw(st.integers(min_value=1, max_value=6))
    out = []
    for i in range(count):
        params = {
            k: draw(arrays(np.float64, shape, elements=finite)) for k, shape in SHAPES.items()
        }
        out.append(_update(f"site_{i}", params, draw(st.integers(min_value=1, max_value=10_000))))
    return out


def _zeros() -> Params:
    return {k: np.zeros(s) for k, s in SHAPES.items()}


@settings(max_examples=60, deadline=None)
@given(updates=site_updates(), perm_seed=st.integers(0, 2**32 - 1))
def test_order_of_sites_does_not_change_the_aggregate(
    updates: list[ClientUpdate], perm_seed: int
) -> None:
    strategy = FedAvg(hparams=HPARAMS)
    state = strategy.init(_zeros())
    shuffled = [updates[i] for i in np.random.default_rng(perm_seed).permutation(len(updates))]
    _, a = strategy.aggregate(1, state, updates)
    _, b = strategy.aggregate(1, state, shuffled)
    for name in SHAPES:
        np.testing.assert_array_equal(a[name], b[name])


@settings(max_examples=60, deadline=None)
@given(updates=site_updates(), copies=st.integers(1, 5))
def test_identical_updates_aggregate_to_that_update(
    updates: list[ClientUpdate], copies: int
) -> None:
    strategy = FedAvg(hparams=HPARAMS)
    one = updates[0]
    same = [_update(f"s{i}", one.params, one.num_examples + i) for i in range(copies)]
    _, out = strategy.aggregate(1, strategy.init(_zeros()), same)
    for name in SHAPES:
        np.testing.assert_allclose(out[name], one.params[name], rtol=1e-12, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(updates=site_updates(), factor=st.integers(2, 1000))
def test_scaling_all_example_counts_changes_nothing(
    updates: list[ClientUpdate], factor: int
) -> None:
    strategy = FedAvg(hparams=HPARAMS)
    state = strategy.init(_zeros())
    scaled = [_update(u.site, u.params, u.num_examples * factor) for u in updates]
    _, a = strategy.aggregate(1, state, updates)
    _, b = strategy.aggregate(1, state, scaled)
    for name in SHAPES:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-12, atol=1e-9)


def test_fedavg_weights_by_examples_worked_by_hand() -> None:
    strategy = FedAvg(hparams=HPARAMS)
    state = strategy.init({"w": np.zeros(2)})
    updates = [
        _update("a", {"w": np.array([1.0, 0.0])}, 30),
        _update("b", {"w": np.array([0.0, 1.0])}, 10),
    ]
    new_state, params = strategy.aggregate(1, state, updates)
    np.testing.assert_allclose(params["w"], [0.75, 0.25])
    np.testing.assert_array_equal(new_state.params["w"], params["w"])


def test_delta_updates_are_added_to_the_global_model() -> None:
    strategy = FedAvg(hparams=HPARAMS)
    state = strategy.init({"w": np.array([1.0, 1.0])})
    updates = [
        _update("a", {"w": np.array([1.0, 0.0])}, 1, UpdateKind.DELTA),
        _update("b", {"w": np.array([0.0, -1.0])}, 1, UpdateKind.DELTA),
    ]
    _, params = strategy.aggregate(1, state, updates)
    np.testing.assert_allclose(params["w"], [1.5, 0.5])


def test_mismatched_tensor_name_raises_naming_the_tensor() -> None:
    strategy = FedAvg(hparams=HPARAMS)
    state = strategy.init({"w": np.zeros(2)})
    with pytest.raises(SchemaError, match="'w'"):
        strategy.aggregate(1, state, [_update("a", {"v": np.zeros(2)}, 1)])


def test_mismatched_shape_raises_naming_the_tensor() -> None:
    strategy = FedAvg(hparams=HPARAMS)
    state = strategy.init({"w": np.zeros(2)})
    with pytest.raises(SchemaError, match="'w' has shape"):
        strategy.aggregate(1, state, [_update("a", {"w": np.zeros(3)}, 1)])


def test_configure_sends_every_sampled_site_the_global_weights_and_hparams() -> None:
    strategy = FedAvg(hparams=HPARAMS)
    state = strategy.init({"w": np.ones(2)})
    instructions = strategy.configure(3, state, ["b", "a"])
    assert sorted(instructions) == ["a", "b"]
    assert all(i.rnd == 3 and dict(i.hparams) == HPARAMS for i in instructions.values())
    np.testing.assert_array_equal(instructions["a"].params["w"], np.ones(2))


def test_state_survives_a_record_round_trip() -> None:
    strategy = FedAvg(hparams=HPARAMS)
    state = strategy.init({"w": np.arange(3.0)})
    restored = strategy.state_from_record(strategy.state_to_record(state))
    np.testing.assert_array_equal(restored.params["w"], state.params["w"])
