"""FedDyn's server rule, worked by hand, and its properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flmi.core.errors import ConfigError
from flmi.core.messages import UpdateKind
from flmi.core.params import Params
from flmi.strategies.feddyn import FedDyn, FedDynOptions
from flmi.strategies.registry import BuildContext, build_strategy
from tests.strategies.support import HPARAMS, params_of_shapes, update, vec


def _feddyn(alpha: float = 0.1, num_sites: int = 4) -> FedDyn:
    return FedDyn(hparams=HPARAMS, options=FedDynOptions(alpha=alpha), num_sites=num_sites)


def test_two_rounds_of_the_server_rule_worked_by_hand() -> None:
    # alpha = 0.1, m = 4 sites, 2 answer. Round 1: w = 1, sites send 3 and 5 -> mean 4;
    # h = 0 - 0.1 * (2/4) * (4 - 1) = -0.15; w = 4 - (-0.15 / 0.1) = 5.5.
    strategy = _feddyn()
    state, params = strategy.aggregate(
        1, strategy.init(vec(1.0)), [update("b", vec(5.0), 7), update("a", vec(3.0), 1)]
    )
    np.testing.assert_allclose(state.h["w"], [-0.15])
    np.testing.assert_allclose(params["w"], [5.5])
    # Round 2: sites send 6.5 and 4.5 -> mean 5.5 = w, so h stays; w = 5.5 + 1.5 = 7.
    state, params = strategy.aggregate(
        2, state, [update("a", vec(6.5), 1), update("b", vec(4.5), 1)]
    )
    np.testing.assert_allclose(state.h["w"], [-0.15])
    np.testing.assert_allclose(params["w"], [7.0])


def test_the_instruction_names_feddyn_and_carries_alpha() -> None:
    strategy = _feddyn(alpha=0.03)
    instruction = strategy.configure(1, strategy.init(vec(0.0)), ["b", "a"])["a"]
    assert instruction.hparams["client_algorithm"] == "feddyn"
    assert instruction.hparams["feddyn_alpha"] == 0.03
    assert instruction.hparams["lr"] == HPARAMS["lr"]


def test_the_mean_is_unweighted_as_in_the_paper() -> None:
    strategy = _feddyn()
    state = strategy.init(vec(0.0))
    mean = strategy.aggregate_updates(
        1, state, [update("a", vec(2.0), 1), update("b", vec(4.0), 99)]
    )
    np.testing.assert_allclose(mean["w"], [3.0])


def test_delta_updates_give_the_rule_on_full_weights() -> None:
    strategy = _feddyn()
    state = strategy.init(vec(1.0))
    full = [update("a", vec(3.0)), update("b", vec(5.0))]
    deltas = [
        update("a", vec(2.0), kind=UpdateKind.DELTA),
        update("b", vec(4.0), kind=UpdateKind.DELTA),
    ]
    (s1, p1), (s2, p2) = strategy.aggregate(1, state, full), strategy.aggregate(1, state, deltas)
    np.testing.assert_allclose(p1["w"], p2["w"])
    np.testing.assert_allclose(s1.h["w"], s2.h["w"])


def test_registry_builds_it_with_the_federation_size() -> None:
    strategy = build_strategy(
        name="feddyn", hparams=HPARAMS, options={"alpha": 0.1}, context=BuildContext(num_sites=4)
    )
    _, params = strategy.aggregate(1, strategy.init(vec(1.0)), [update("a", vec(3.0))])
    # one of four sites: h = -0.1 * 0.25 * 2 = -0.05; w = 3 + 0.5
    np.testing.assert_allclose(params["w"], [3.5])


@pytest.mark.parametrize("alpha", [0.0, -1.0, float("nan")])
def test_alpha_must_be_positive_naming_the_key(alpha: float) -> None:
    with pytest.raises(ConfigError, match=r"strategy\.alpha must be"):
        build_strategy(name="feddyn", hparams=HPARAMS, options={"alpha": alpha})


def test_the_state_record_round_trips() -> None:
    strategy = _feddyn()
    state, _ = strategy.aggregate(1, strategy.init(vec(1.0, 2.0)), [update("a", vec(3.0, 0.0))])
    back = strategy.state_from_record(strategy.state_to_record(state))
    np.testing.assert_array_equal(back.h["w"], state.h["w"])
    np.testing.assert_array_equal(back.params["w"], state.params["w"])


@settings(max_examples=30, deadline=None)
@given(x=params_of_shapes(), data=st.data())
def test_property_sites_that_send_the_global_weights_back_move_nothing(
    x: Params, data: st.DataObject
) -> None:
    # w_i = w for every site: the mean is w, h stays 0, and w is its own fixed point.
    count = data.draw(st.integers(1, 6))
    strategy = _feddyn(alpha=data.draw(st.floats(1e-3, 10.0)), num_sites=6)
    updates = [update(f"s{i}", x, data.draw(st.integers(1, 50))) for i in range(count)]
    state, params = strategy.aggregate(1, strategy.init(x), updates)
    for k in x:
        np.testing.assert_allclose(params[k], x[k], rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(state.h[k], 0.0, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(tensors=st.lists(params_of_shapes(), min_size=1, max_size=5), data=st.data())
def test_property_site_order_and_example_counts_change_nothing(
    tensors: list[Params], data: st.DataObject
) -> None:
    strategy = _feddyn(num_sites=5)
    state = strategy.init({k: np.zeros_like(v) for k, v in tensors[0].items()})
    updates = [update(f"s{i}", t, data.draw(st.integers(1, 50))) for i, t in enumerate(tensors)]
    shuffled = data.draw(st.permutations(updates))
    recounted = [update(u.site, u.params, 1) for u in shuffled]
    (s1, p1), (s2, p2) = (
        strategy.aggregate(1, state, updates),
        strategy.aggregate(1, state, recounted),
    )
    for k in p1:
        np.testing.assert_array_equal(p1[k], p2[k])
        np.testing.assert_array_equal(s1.h[k], s2.h[k])
