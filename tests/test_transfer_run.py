"""Transfer learning through `flmi run`: a previous run's model as init weights, frozen layers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from flmi.config import load_config
from flmi.core.errors import ConfigError, DataError
from flmi.simulation import run_experiment
from tests.conftest import tiny_tables, write_config


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pretrained")
    config = load_config(write_config(folder / "c.toml", tiny_tables()))
    run_experiment(config=config, out=folder / "run")
    return folder / "run" / "model.safetensors"


@pytest.mark.parametrize("strategy", ["fedavg", "fedadam"])
def test_frozen_tensors_end_bit_identical_and_the_rest_moves(
    tmp_path: Path, pretrained: Path, strategy: str
) -> None:
    tables = tiny_tables(
        task={"init_weights": str(pretrained), "freeze": ["features.0", "features.1"]},
        strategy={"name": strategy},
        baselines={"pooled": True, "local": True},
    )
    run_experiment(
        config=load_config(write_config(tmp_path / "c.toml", tables)), out=tmp_path / "r"
    )
    before = load_file(str(pretrained))
    after = load_file(str(tmp_path / "r" / "model.safetensors"))
    frozen = ["features.0.weight", "features.1.weight", "features.1.bias"]
    for name in frozen:
        assert np.array_equal(before[name], after[name]), name
    moved = [k for k in before if k not in frozen and not np.array_equal(before[k], after[k])]
    assert "head.weight" in moved and "features.3.weight" in moved


def test_init_weights_relative_to_the_config_and_a_new_head_skipped(
    tmp_path: Path, pretrained: Path
) -> None:
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "m.safetensors").write_bytes(pretrained.read_bytes())
    tables = tiny_tables(
        task={
            "num_classes": 3,
            "init_weights": "weights/m.safetensors",
            "init_skip": ["head"],
            "freeze": ["features"],
        },
        federation={"rounds": 1},
    )
    run_experiment(
        config=load_config(write_config(tmp_path / "c.toml", tables)), out=tmp_path / "r"
    )
    before = load_file(str(pretrained))
    after = load_file(str(tmp_path / "r" / "model.safetensors"))
    assert after["head.weight"].shape == (3, before["head.weight"].shape[1])
    features = [k for k in before if k.startswith("features.")]
    assert features and all(np.array_equal(before[k], after[k]) for k in features)


def test_a_head_of_another_shape_without_skip_stops_before_anything_is_written(
    tmp_path: Path, pretrained: Path
) -> None:
    tables = tiny_tables(task={"num_classes": 3, "init_weights": str(pretrained)})
    config = load_config(write_config(tmp_path / "c.toml", tables))
    with pytest.raises(ConfigError, match="'head.bias'.*task.init_skip"):
        run_experiment(config=config, out=tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_bad_transfer_settings_are_refused_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="only .safetensors"):
        load_config(write_config(tmp_path / "a.toml", tiny_tables(task={"init_weights": "m.pt"})))
    with pytest.raises(ConfigError, match="task.init_skip"):
        load_config(write_config(tmp_path / "b.toml", tiny_tables(task={"init_skip": ["head"]})))
    missing = tiny_tables(task={"init_weights": "absent.safetensors"})
    with pytest.raises(DataError, match="task.init_weights: no such file"):
        run_experiment(config=load_config(write_config(tmp_path / "c.toml", missing)), out=None)
    typo = tiny_tables(task={"freeze": ["featurez"]})
    with pytest.raises(ConfigError, match="task.freeze: 'featurez'"):
        run_experiment(config=load_config(write_config(tmp_path / "d.toml", typo)), out=None)
