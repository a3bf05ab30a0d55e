"""FedNova: a hand-worked round with unequal local steps, and properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flmi.core.messages import ClientUpdate, UpdateKind
from flmi.strategies.fedavg import FedAvg
from flmi.strategies.fednova import FedNova
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


def test_fednova_normalises_by_local_steps_worked_by_hand() -> None:
    strategy = FedNova(hparams=HPARAMS)
    state = strategy.init(vec(0.0, 0.0))
    # Equal examples, p = 1/2 each. Site a took 1 step to [1, 0]; site b took 4 to [0, 4].
    # d_a = (x - y_a) / 1 = [-1, 0];  d_b = (x - y_b) / 4 = [0, -1]
    # tau_eff = 1/2 * 1 + 1/2 * 4 = 2.5
    # x_new = x - 2.5 * (1/2 * [-1, 0] + 1/2 * [0, -1]) = [1.25, 1.25]
    # (FedAvg would give [0.5, 2.0]: pulled towards the site that took more steps.)
    updates = [
        update("a", vec(1.0, 0.0), 10, steps=1),
        update("b", vec(0.0, 4.0), 10, steps=4),
    ]
    _, params = strategy.aggregate(1, state, updates)
    np.testing.assert_allclose(params["w"], [1.25, 1.25], rtol=1e-15)
    _, fedavg = FedAvg(hparams=HPARAMS).aggregate(
        1, FedAvg(hparams=HPARAMS).init(vec(0, 0)), updates
    )
    np.testing.assert_allclose(fedavg["w"], [0.5, 2.0])


def test_fednova_weights_by_examples_worked_by_hand() -> None:
    strategy = FedNova(hparams=HPARAMS)
    state = strategy.init(vec(1.0))
    # p_a = 3/4 (2 steps, to 3), p_b = 1/4 (1 step, to 0).
    # d_a = (1 - 3) / 2 = -1;  d_b = (1 - 0) / 1 = 1;  tau_eff = 3/4 * 2 + 1/4 * 1 = 1.75
    # x_new = 1 - 1.75 * (3/4 * -1 + 1/4 * 1) = 1 - 1.75 * -0.5 = 1.875
    updates = [update("a", vec(3.0), 30, steps=2), update("b", vec(0.0), 10, steps=1)]
    _, params = strategy.aggregate(1, state, updates)
    np.testing.assert_allclose(params["w"], [1.875], rtol=1e-15)


def test_deltas_give_the_same_model_as_full_weights() -> None:
    strategy = FedNova(hparams=HPARAMS)
    state = strategy.init(vec(1.0, -1.0))
    full = [update("a", vec(2.0, 0.0), 3, steps=2), update("b", vec(-1.0, 1.0), 5, steps=7)]
    deltas = [
        update(
            u.site,
            {"w": u.params["w"] - np.array([1.0, -1.0])},
            u.num_examples,
            kind=UpdateKind.DELTA,
            steps=u.num_steps,
        )
        for u in full
    ]
    _, a = strategy.aggregate(1, state, full)
    _, b = strategy.aggregate(1, state, deltas)
    np.testing.assert_allclose(a["w"], b["w"], rtol=1e-14)


def test_zero_local_steps_is_refused_naming_the_site() -> None:
    strategy = FedNova(hparams=HPARAMS)
    with pytest.raises(ValueError, match="site 'b' reports 0 local steps"):
        strategy.aggregate(
            1, strategy.init(vec(0.0)), [update("a", vec(1.0)), update("b", vec(1.0), steps=0)]
        )


@settings(max_examples=40, deadline=None)
@given(updates=site_updates(), steps=st.integers(1, 20))
def test_equal_local_steps_reduce_to_fedavg(updates: list[ClientUpdate], steps: int) -> None:
    same_steps = [update(u.site, u.params, u.num_examples, steps=steps) for u in updates]
    nova, avg = FedNova(hparams=HPARAMS), FedAvg(hparams=HPARAMS)
    _, a = nova.aggregate(1, nova.init(zeros()), same_steps)
    _, b = avg.aggregate(1, avg.init(zeros()), same_steps)
    assert_close(a, b, rtol=1e-9, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(updates=site_updates(), seed=st.integers(0, 2**32 - 1))
def test_order_of_sites_does_not_change_the_aggregate(
    updates: list[ClientUpdate], seed: int
) -> None:
    strategy = FedNova(hparams=HPARAMS)
    state = strategy.init(zeros())
    _, a = strategy.aggregate(1, state, updates)
    _, b = strategy.aggregate(1, state, permuted(updates, seed))
    assert_same_bits(a, b)


@settings(max_examples=40, deadline=None)
@given(updates=site_updates(), counts=st.lists(st.integers(1, 1000), min_size=1, max_size=5))
def test_identical_updates_aggregate_to_that_update(
    updates: list[ClientUpdate], counts: list[int]
) -> None:
    strategy = FedNova(hparams=HPARAMS)
    _, out = strategy.aggregate(1, strategy.init(zeros()), copies_of(updates[0], counts))
    assert_close(out, updates[0].params, rtol=1e-12, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(updates=site_updates(), factor=st.integers(2, 1000))
def test_scaling_all_example_counts_changes_nothing(
    updates: list[ClientUpdate], factor: int
) -> None:
    strategy = FedNova(hparams=HPARAMS)
    state = strategy.init(zeros())
    _, a = strategy.aggregate(1, state, updates)
    _, b = strategy.aggregate(1, state, scaled(updates, factor))
    assert_close(a, b)
