"""Pretrained weights from a local safetensors file, and frozen layers."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from flmi.core.errors import ConfigError, DataError
from flmi.tasks.classification import ClassificationTask
from flmi.tasks.torch_params import params_copy
from flmi.tasks.transfer import frozen_names, load_init_weights


def _model(num_classes: int = 2, seed: int = 0) -> torch.nn.Module:
    task = ClassificationTask(
        num_classes=num_classes, in_channels=1, spatial_dims=2, positive_label=1, width=4
    )
    return task.build_model(seed=seed)


def _saved(tmp_path: Path, model: torch.nn.Module) -> Path:
    path = tmp_path / "pretrained.safetensors"
    save_file(params_copy(model), str(path))
    return path


def test_every_tensor_is_loaded_from_the_file(tmp_path: Path) -> None:
    source = params_copy(_model(seed=7))
    target = _model(seed=0)
    loaded = load_init_weights(model=target, path=_saved(tmp_path, _model(seed=7)))
    after = params_copy(target)
    assert loaded == sorted(source)
    assert all(np.array_equal(after[k], source[k]) for k in source)


def test_a_new_head_for_another_class_count_is_skipped_by_prefix(tmp_path: Path) -> None:
    path = _saved(tmp_path, _model(num_classes=2, seed=7))
    target = _model(num_classes=5, seed=0)
    fresh_head = params_copy(target)["head.weight"]
    with pytest.raises(
        ConfigError,
        match=r"'head.bias' has shape \[2\] .* but \[5\] in the model; add its prefix to "
        r"task.init_skip",
    ):
        load_init_weights(model=target, path=path)
    assert np.array_equal(params_copy(target)["head.weight"], fresh_head)  # nothing half-loaded
    load_init_weights(model=target, path=path, skip=["head"])
    after, source = params_copy(target), params_copy(_model(seed=7))
    assert np.array_equal(after["head.weight"], fresh_head)
    assert np.array_equal(after["features.0.weight"], source["features.0.weight"])


def test_a_missing_tensor_is_named(tmp_path: Path) -> None:
    tensors = params_copy(_model(seed=7))
    del tensors["features.1.bias"]
    path = tmp_path / "partial.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(ConfigError, match="'features.1.bias' of the model is missing"):
        load_init_weights(model=_model(), path=path)


def test_an_unexpected_tensor_is_named(tmp_path: Path) -> None:
    tensors = {**params_copy(_model(seed=7)), "extra.weight": np.zeros(3, dtype=np.float32)}
    path = tmp_path / "more.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(ConfigError, match="'extra.weight' .* is not in the model"):
        load_init_weights(model=_model(), path=path)


def test_a_pickle_or_a_missing_file_is_refused_without_being_read(tmp_path: Path) -> None:
    pickled = tmp_path / "weights.pt"
    pickled.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(DataError, match="only .safetensors"):
        load_init_weights(model=_model(), path=pickled)
    with pytest.raises(DataError, match="no such file"):
        load_init_weights(model=_model(), path=tmp_path / "absent.safetensors")
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(DataError, match="cannot read"):
        load_init_weights(model=_model(), path=fake)


def test_freeze_prefixes_follow_module_paths_and_typos_are_refused() -> None:
    model = _model()
    assert frozen_names(model=model, prefixes=["features.0"]) == ["features.0.weight"]
    assert frozen_names(model=model, prefixes=["head"]) == ["head.bias", "head.weight"]
    with pytest.raises(ConfigError, match="task.freeze: 'feature' names no tensor"):
        frozen_names(model=model, prefixes=["feature"])
    with pytest.raises(ConfigError, match="freezes every trainable tensor"):
        frozen_names(model=model, prefixes=["features", "head"])
