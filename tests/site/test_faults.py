from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from flmi.config import load_config
from flmi.core.errors import ConfigError
from flmi.core.messages import ClientUpdate, TrainInstruction
from flmi.data.arrays import ArraySplit, SiteSplits
from flmi.simulation import run_experiment
from flmi.site.faults import Fault, FaultSpec, FaultySite, flip_labels
from flmi.site.site import Site
from flmi.tasks.classification import ClassificationTask
from flmi.tasks.torch_params import params_copy
from tests.conftest import tiny_tables, write_config

HPARAMS = {"lr": 0.05, "batch_size": 8, "local_epochs": 1}


def _site() -> Site:
    rng = np.random.default_rng(0)
    split = ArraySplit(x=rng.random((16, 1, 8, 8), dtype=np.float32), y=rng.integers(0, 2, 16))
    task = ClassificationTask(
        num_classes=2, in_channels=1, spatial_dims=2, positive_label=1, width=4
    )
    return Site(
        name="h",
        data=SiteSplits(train=split, val=split, test=split),
        task=task,
        seed=0,
        device=torch.device("cpu"),
    )


def _instruction() -> TrainInstruction:
    task = ClassificationTask(
        num_classes=2, in_channels=1, spatial_dims=2, positive_label=1, width=4
    )
    return TrainInstruction(rnd=1, params=params_copy(task.build_model(seed=1)), hparams=HPARAMS)


def test_scaled_update_is_the_honest_change_times_the_factor() -> None:
    instruction = _instruction()
    honest = _site().train(instruction)
    scaled = FaultySite(site=_site(), fault=FaultSpec(kind=Fault.SCALE, scale=10.0), seed=0).train(
        instruction
    )
    assert isinstance(honest, ClientUpdate) and isinstance(scaled, ClientUpdate)
    for name, x in instruction.params.items():
        np.testing.assert_allclose(
            scaled.params[name] - x, 10 * (honest.params[name] - x), rtol=1e-4, atol=1e-6
        )


def test_noise_update_is_seeded_and_unrelated_to_training() -> None:
    instruction = _instruction()
    a = FaultySite(site=_site(), fault=FaultSpec(kind=Fault.NOISE, noise_std=1.0), seed=0).train(
        instruction
    )
    b = FaultySite(site=_site(), fault=FaultSpec(kind=Fault.NOISE, noise_std=1.0), seed=0).train(
        instruction
    )
    assert isinstance(a, ClientUpdate) and isinstance(b, ClientUpdate)
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    spread = np.concatenate(
        [(a.params[k] - v).ravel() for k, v in instruction.params.items()]
    ).std()
    assert spread == pytest.approx(1.0, rel=0.1)


@pytest.mark.parametrize("kind", [Fault.NAN, Fault.INF])
def test_non_finite_fault_gets_past_the_site_check(kind: Fault) -> None:
    reply = FaultySite(site=_site(), fault=FaultSpec(kind=kind), seed=0).train(_instruction())
    assert isinstance(reply, ClientUpdate)
    assert not all(np.isfinite(v).all() for v in reply.params.values())


def test_label_flip_flips_training_labels_only() -> None:
    y = np.array([0, 1, 1, 0])
    split = ArraySplit(x=np.zeros((4, 1, 2, 2), np.float32), y=y)
    flipped = flip_labels(SiteSplits(train=split, val=split, test=split), num_classes=2)
    np.testing.assert_array_equal(flipped.train.y, [1, 0, 0, 1])
    np.testing.assert_array_equal(flipped.test.y, y)


def test_server_rejects_a_nan_update_and_the_run_finishes(tmp_path: Path) -> None:
    tables = tiny_tables(sites={"hospital_2": {"fault": "nan"}})
    config = load_config(write_config(tmp_path / "c.toml", tables))
    result = run_experiment(config=config, out=tmp_path / "run")
    lines = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert all(line["sites_failed"] == {"hospital_2": "rejected_by_server"} for line in lines)
    assert all(np.isfinite(v).all() for v in result.params.values())


def test_per_site_settings_reach_only_that_site(tmp_path: Path) -> None:
    from flmi.strategies.fedavg import FedAvg
    from flmi.strategies.per_site import PerSiteSettings

    strategy = PerSiteSettings(
        inner=FedAvg(hparams=HPARAMS), overrides={"b": {"local_epochs": 3, "lr": 0.5}}
    )
    instructions = strategy.configure(1, strategy.init({"w": np.zeros(1)}), ["a", "b"])
    assert instructions["a"].hparams == HPARAMS
    assert instructions["b"].hparams == {**HPARAMS, "local_epochs": 3, "lr": 0.5}


def test_site_table_for_an_unknown_site_is_a_config_error_before_anything_is_written(
    tmp_path: Path,
) -> None:
    tables = tiny_tables(sites={"hospital_9": {"lr": 0.1}})
    config = load_config(write_config(tmp_path / "c.toml", tables))
    with pytest.raises(ConfigError, match=r"\[sites.hospital_9\]: no site is named 'hospital_9'"):
        run_experiment(config=config, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_unknown_key_in_a_site_table_is_named(tmp_path: Path) -> None:
    tables = tiny_tables(sites={"hospital_1": {"learning_rate": 0.1}})
    with pytest.raises(ConfigError, match="unknown key 'sites.hospital_1.learning_rate'"):
        load_config(write_config(tmp_path / "c.toml", tables))


def test_site_overrides_run_and_are_kept_in_the_config_snapshot(tmp_path: Path) -> None:
    tables = tiny_tables(sites={"hospital_1": {"local_epochs": 3}}, federation={"rounds": 1})
    config = load_config(write_config(tmp_path / "c.toml", tables))
    assert config.sites["hospital_1"].local_epochs == 3
    run_experiment(config=config, out=tmp_path / "run")
    snapshot = load_config(tmp_path / "run" / "config.toml")
    assert (
        snapshot.sites["hospital_1"].local_epochs == 3 and snapshot.sites["hospital_1"].lr is None
    )
