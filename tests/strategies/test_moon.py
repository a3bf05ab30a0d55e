"""MOON's server side: FedAvg's mean, with the contrastive settings in every instruction."""

from __future__ import annotations

import numpy as np
import pytest

from flmi.core.errors import ConfigError
from flmi.strategies.registry import build_strategy
from tests.strategies.support import HPARAMS, update, vec


def test_instruction_names_moon_with_its_defaults() -> None:
    strategy = build_strategy(name="moon", hparams=HPARAMS, options={})
    instruction = strategy.configure(1, strategy.init(vec(0.0)), ["a"])["a"]
    assert instruction.hparams["client_algorithm"] == "moon"
    assert instruction.hparams["moon_mu"] == 1.0
    assert instruction.hparams["moon_temperature"] == 0.5


def test_server_step_is_the_example_weighted_mean() -> None:
    strategy = build_strategy(name="moon", hparams=HPARAMS, options={"mu": 5.0})
    _, params = strategy.aggregate(
        1, strategy.init(vec(0.0)), [update("a", vec(1.0), 1), update("b", vec(3.0), 3)]
    )
    np.testing.assert_allclose(params["w"], [2.5])


@pytest.mark.parametrize(("key", "value"), [("mu", -0.1), ("temperature", 0.0)])
def test_out_of_range_options_name_the_key(key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=rf"strategy\.{key} must be"):
        build_strategy(name="moon", hparams=HPARAMS, options={key: value})
