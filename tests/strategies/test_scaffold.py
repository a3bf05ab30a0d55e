from __future__ import annotations

import numpy as np
import pytest
import torch

from flmi.core.errors import ConfigError
from flmi.core.keys import Extra
from flmi.core.messages import ClientUpdate, UpdateKind
from flmi.site.hooks import ScaffoldCorrection
from flmi.strategies.scaffold import Scaffold

SGD = {"lr": 0.1, "batch_size": 4, "optimizer": "sgd", "momentum": 0.0}


def _update(site: str, w: float, n: int, dc: float) -> ClientUpdate:
    return ClientUpdate(
        site=site,
        params={"w": np.array([w])},
        kind=UpdateKind.FULL,
        num_examples=n,
        num_steps=1,
        metrics={},
        extras={Extra.SCAFFOLD_DELTA_C + "w": np.array([dc])},
    )


def test_server_step_worked_by_hand() -> None:
    # x = 0; sites: y = 1 (n = 1) and y = 3 (n = 3) -> weighted step 0.25 * 1 + 0.75 * 3 = 2.5
    # delta c = 2 and 4 -> mean 3; 2 of N = 4 sites took part -> c = 0 + (2 / 4) * 3 = 1.5
    strategy = Scaffold(hparams=SGD, server_lr=1.0, num_sites=4)
    state, params = strategy.aggregate(
        1, strategy.init({"w": np.zeros(1)}), [_update("a", 1.0, 1, 2.0), _update("b", 3.0, 3, 4.0)]
    )
    np.testing.assert_allclose(params["w"], [2.5])
    np.testing.assert_allclose(state.c["w"], [1.5])
    instruction = strategy.configure(2, state, ["a"])["a"]
    np.testing.assert_allclose(instruction.extras[Extra.SCAFFOLD_C + "w"], [1.5])
    assert instruction.hparams["client_algorithm"] == "scaffold"


def test_server_lr_scales_the_step() -> None:
    strategy = Scaffold(hparams=SGD, server_lr=0.5, num_sites=2)
    _, params = strategy.aggregate(
        1, strategy.init({"w": np.zeros(1)}), [_update("a", 2.0, 1, 0.0)]
    )
    np.testing.assert_allclose(params["w"], [1.0])


def test_site_variate_update_worked_by_hand() -> None:
    # f(w) = w^2 / 2 on one weight: gradient = w. x = 1, c = 0.3, c_i = 0.1, lr = 0.1, K = 2.
    # step 1: g = 1 + (0.3 - 0.1) = 1.2 -> w = 0.88
    # step 2: g = 0.88 + 0.2 = 1.08 -> w = 0.772
    # c_i+ = c_i - c + (x - y) / (K lr) = 0.1 - 0.3 + 0.228 / 0.2 = 0.94; delta = 0.84
    model = torch.nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        model.weight.fill_(1.0)
    correction = ScaffoldCorrection(
        model=model, server_c={"weight": np.array([[0.3]])}, site_c={"weight": np.array([[0.1]])}
    )
    hooks = correction.hooks()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        (model.weight**2 / 2).sum().backward()
        assert hooks.before_step is not None
        hooks.before_step(model)
        optimizer.step()
    assert float(model.weight.detach()) == pytest.approx(0.772)
    result = correction.finish(model=model, num_steps=2, lr=0.1)
    assert float(result.site_c["weight"][0, 0]) == pytest.approx(0.94)
    assert float(result.delta_c["weight"][0, 0]) == pytest.approx(0.84)


def test_scaffold_with_momentum_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="federation.momentum = 0"):
        Scaffold(hparams={**SGD, "momentum": 0.9}, server_lr=1.0, num_sites=2)


def test_state_survives_a_record_round_trip() -> None:
    strategy = Scaffold(hparams=SGD, server_lr=1.0, num_sites=2)
    state, _ = strategy.aggregate(1, strategy.init({"w": np.zeros(1)}), [_update("a", 2.0, 1, 1.0)])
    restored = strategy.state_from_record(strategy.state_to_record(state))
    np.testing.assert_array_equal(restored.c["w"], state.c["w"])
    np.testing.assert_array_equal(restored.params["w"], state.params["w"])
