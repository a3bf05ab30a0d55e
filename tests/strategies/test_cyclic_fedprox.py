from __future__ import annotations

import numpy as np
import pytest

from flmi.config import config_from_dict
from flmi.core.errors import ConfigError
from flmi.core.messages import ClientUpdate, UpdateKind
from flmi.strategies.cyclic import Cyclic
from flmi.strategies.registry import build_strategy

HPARAMS = {"lr": 0.01, "batch_size": 4}
SITES = ["a", "b", "c", "d"]


def test_each_cycle_visits_every_site_exactly_once() -> None:
    strategy = Cyclic(hparams=HPARAMS, seed=0, deterministic_cycle=False)
    for cycle in range(3):
        visited = [strategy.visited_site(cycle * 4 + k, SITES) for k in range(1, 5)]
        assert sorted(visited) == SITES
    orders = {tuple(strategy.visited_site(c * 4 + k, SITES) for k in range(1, 5)) for c in range(6)}
    assert len(orders) > 1  # reshuffled between cycles


def test_deterministic_cycle_visits_sites_in_sorted_order() -> None:
    strategy = Cyclic(hparams=HPARAMS, seed=0, deterministic_cycle=True)
    assert [strategy.visited_site(r, ["c", "a", "b"]) for r in range(1, 7)] == list("abcabc")


def test_configure_sends_one_instruction_and_the_update_becomes_the_model() -> None:
    strategy = Cyclic(hparams=HPARAMS, seed=0, deterministic_cycle=True)
    state = strategy.init({"w": np.zeros(2)})
    assert list(strategy.configure(2, state, SITES)) == ["b"]
    update = ClientUpdate(
        site="b",
        params={"w": np.array([1.0, 2.0])},
        kind=UpdateKind.FULL,
        num_examples=3,
        num_steps=1,
        metrics={},
    )
    _, params = strategy.aggregate(2, state, [update])
    np.testing.assert_array_equal(params["w"], [1.0, 2.0])


def test_cyclic_with_min_sites_above_one_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="set federation.min_sites = 1"):
        config_from_dict({"strategy": {"name": "cyclic"}, "federation": {"min_sites": 2}})


def test_krum_with_too_few_sites_for_its_options_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="raise federation.min_sites to 5"):
        config_from_dict({"strategy": {"name": "krum"}, "federation": {"min_sites": 2}})


def test_fedprox_sends_mu_to_every_site() -> None:
    strategy = build_strategy(name="fedprox", hparams=HPARAMS, options={"mu": 0.05})
    instructions = strategy.configure(1, strategy.init({"w": np.zeros(1)}), ["a", "b"])
    assert all(i.hparams["prox_mu"] == 0.05 for i in instructions.values())


def test_negative_mu_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(ConfigError, match="strategy.mu"):
        config_from_dict({"strategy": {"name": "fedprox", "mu": -1.0}})


@pytest.mark.parametrize("local", [{"optimizer": "adam"}, {"momentum": 0.9}])
def test_fednova_with_anything_but_plain_sgd_is_a_config_error(local: dict) -> None:
    with pytest.raises(ConfigError, match="fednova.*federation.momentum = 0"):
        config_from_dict(
            {"strategy": {"name": "fednova"}, "federation": {"momentum": 0.0, **local}}
        )


def test_krum_error_says_how_to_fit_a_small_federation() -> None:
    with pytest.raises(ConfigError, match="lower strategy.num_byzantine"):
        config_from_dict({"strategy": {"name": "krum"}, "federation": {"min_sites": 2}})
