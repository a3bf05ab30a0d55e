from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from flmi.config import config_from_dict, load_config
from flmi.core.errors import ConfigError
from flmi.core.keys import Extra
from flmi.core.messages import ClientUpdate, UpdateKind
from flmi.simulation import run_experiment
from flmi.strategies.fednorm import FedNorm
from tests.conftest import tiny_tables, write_config

GROUPS = {"a": "ct", "b": "ct", "c": "mri"}


def _update(site: str, conv: float, norm: float, n: int) -> ClientUpdate:
    return ClientUpdate(
        site=site,
        params={"conv": np.array([conv], dtype=np.float64)},
        kind=UpdateKind.FULL,
        num_examples=n,
        num_steps=1,
        metrics={},
        extras={Extra.NORM + "norm": np.array([norm], dtype=np.float64)},
    )


def _initial() -> dict[str, np.ndarray]:
    return {"conv": np.zeros(1), "norm": np.ones(1)}


def test_shared_layers_average_over_all_sites_and_norm_layers_within_groups() -> None:
    # conv: (1*1 + 1*3 + 2*5) / 4 = 3.5; norm ct: (1*10 + 1*20) / 2 = 15; norm mri: 30
    strategy = FedNorm(hparams={"lr": 0.1, "batch_size": 4}, groups=GROUPS)
    updates = [_update("a", 1, 10, 1), _update("b", 3, 20, 1), _update("c", 5, 30, 2)]
    state, params = strategy.aggregate(1, strategy.init(_initial()), updates)
    np.testing.assert_allclose(params["conv"], [3.5])
    np.testing.assert_allclose(strategy.site_params(state, "a")["norm"], [15.0])
    np.testing.assert_allclose(strategy.site_params(state, "c")["norm"], [30.0])
    instructions = strategy.configure(2, state, ["a", "c"])
    np.testing.assert_allclose(instructions["c"].params["norm"], [30.0])
    np.testing.assert_allclose(instructions["a"].params["conv"], [3.5])


def test_order_of_sites_does_not_change_the_result_and_state_round_trips() -> None:
    strategy = FedNorm(hparams={"lr": 0.1}, groups=GROUPS)
    updates = [_update("a", 1, 10, 1), _update("b", 3, 20, 3), _update("c", 5, 30, 2)]
    first, _ = strategy.aggregate(1, strategy.init(_initial()), updates)
    second, _ = strategy.aggregate(1, strategy.init(_initial()), list(reversed(updates)))
    restored = strategy.state_from_record(strategy.state_to_record(first))
    for state in (second, restored):
        for site in GROUPS:
            a, b = strategy.site_params(first, site), strategy.site_params(state, site)
            assert all(np.array_equal(a[k], b[k]) for k in a)


def test_fednorm_without_groups_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"needs each site's group"):
        config_from_dict({"strategy": {"name": "fednorm"}})


def test_fednorm_run_with_two_modality_groups(tmp_path: Path) -> None:
    sites = {f"hospital_{i}": {"group": "ct" if i <= 2 else "mri"} for i in range(1, 5)}
    tables = tiny_tables(strategy={"name": "fednorm"}, sites=sites)
    run_experiment(
        config=load_config(write_config(tmp_path / "c.toml", tables)), out=tmp_path / "run"
    )
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(line["sites_failed"] == {} and len(line["per_site"]) == 4 for line in lines)


def test_a_site_without_a_group_is_named_before_the_run_starts(tmp_path: Path) -> None:
    sites = {f"hospital_{i}": {"group": "ct"} for i in range(1, 4)}
    tables = tiny_tables(strategy={"name": "fednorm"}, sites=sites)
    with pytest.raises(ConfigError, match="missing for hospital_4"):
        run_experiment(
            config=load_config(write_config(tmp_path / "c.toml", tables)), out=tmp_path / "run"
        )
    assert not (tmp_path / "run").exists()
