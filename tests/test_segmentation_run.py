"""Whole runs of segmentation and multi-label classification on tiny generated hospitals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flmi.config import config_from_dict, load_config
from flmi.core.errors import ConfigError
from flmi.simulation import run_experiment
from tests.conftest import REPO, tiny_tables, write_config


def _segmentation_tables(**sections: dict[str, Any]) -> dict[str, Any]:
    tables = tiny_tables(
        data={"source": "synthetic_lesions", "image_size": 16, "n_patients": 200},
        task={"name": "segmentation", "num_classes": 2, "model": "unet", "width": 4},
        federation={"rounds": 2, "lr": 0.01, "optimizer": "adam", "batch_size": 8},
    )
    for name, values in sections.items():
        tables.setdefault(name, {}).update(values)
    return tables


def _run(tmp_path: Path, tables: dict[str, Any]) -> dict[str, Any]:
    config = load_config(write_config(tmp_path / "c.toml", tables))
    run_experiment(config=config, out=tmp_path / "run")
    summary: dict[str, Any] = json.loads((tmp_path / "run" / "summary.json").read_text())
    return summary


def test_2d_segmentation_runs_federated_pooled_and_local_with_dice_and_intervals(
    tmp_path: Path,
) -> None:
    tables = _segmentation_tables(
        baselines={"pooled": True, "local": True}, federation={"rounds": 1}
    )
    summary = _run(tmp_path, tables)
    arms = summary["arms"]
    assert sorted(arms) == ["federated", "local", "pooled"]
    for arm in arms.values():
        assert set(arm["site_mean"]) == {"loss", "dice", "dice_1", "hd95", "hd95_1"}
        for metrics in arm["per_site"].values():
            assert metrics["dice"] is None or 0.0 <= metrics["dice"] <= 1.0
    federated = arms["federated"]
    assert set(federated["global"]) == {"loss", "dice", "dice_1", "hd95", "hd95_1"}
    low, high = federated["ci"]["global"]["dice"]
    assert low <= federated["global"]["dice"] <= high
    assert federated["ci"]["per_site"]["hospital_1"]["hd95"] is not None
    # Sites report, per class, how many of their cases contain it: counts, never masks.
    site = summary["sites"]["hospital_1"]
    assert set(site["label_counts"]) == {"0", "1"}
    assert site["label_counts"]["0"] == site["n_train"]


@pytest.mark.parametrize(
    "strategy",
    ["fedprox", "fedbn", "scaffold", "fedadam", "fednova", "ditto", "finetune", "ifca", "cusfl"],
)
def test_segmentation_runs_with_each_strategy_that_applies(tmp_path: Path, strategy: str) -> None:
    tables = _segmentation_tables(
        strategy={"name": strategy},
        federation={"rounds": 1, "optimizer": "sgd", "momentum": 0.0, "lr": 0.05},
        report={"bootstrap_resamples": 0},
    )
    summary = _run(tmp_path, tables)
    dice = summary["arms"]["federated"]["site_mean"]["dice"]
    assert dice is None or 0.0 <= dice <= 1.0


def test_3d_segmentation_with_patches_smaller_than_the_volume(tmp_path: Path) -> None:
    tables = _segmentation_tables(
        data={"spatial_dims": 3, "n_patients": 100, "image_size": 24},
        partition={"num_sites": 2},
        task={"patch_size": [16, 16, 16], "model": "segresnet", "width": 4, "norm": "group"},
        federation={"rounds": 1, "batch_size": 4},
        report={"bootstrap_resamples": 10},
    )
    summary = _run(tmp_path, tables)
    assert summary["arms"]["federated"]["global"]["hd95"] is not None
    model_meta = json.loads((tmp_path / "run" / "model.json").read_text())["meta"]
    assert model_meta["spatial_dims"] == 3
    assert model_meta["task"]["patch_size"] == [16, 16, 16]


def test_multilabel_densenet_run_reports_per_label_and_macro_auc(tmp_path: Path) -> None:
    tables = tiny_tables(
        data={"source": "synthetic_lesions", "image_size": 32, "n_patients": 200},
        task={
            "name": "classification",
            "num_classes": 2,
            "multi_label": True,
            "model": "densenet121",
            "init_features": 8,
            "growth_rate": 4,
            "norm": "group",
        },
        federation={"rounds": 1, "optimizer": "adam", "lr": 0.003},
    )
    summary = _run(tmp_path, tables)
    metrics = summary["arms"]["federated"]["global"]
    assert set(metrics) == {"loss", "auc", "accuracy", "auc_0", "auc_1"}
    assert summary["sites"]["hospital_1"]["label_counts"].keys() == {"0", "1"}


def test_lesion_present_classification_with_densenet_on_generated_lesions(
    tmp_path: Path,
) -> None:
    tables = tiny_tables(
        data={"source": "synthetic_lesions", "image_size": 32, "n_patients": 200},
        task={"model": "densenet121", "init_features": 8, "growth_rate": 4},
        federation={"rounds": 1},
    )
    summary = _run(tmp_path, tables)
    assert set(summary["arms"]["federated"]["global"]) >= {"auc", "accuracy", "sensitivity"}


@pytest.mark.parametrize(
    ("sections", "match"),
    [
        ({"task": {"name": "segmentation", "model": "small_cnn"}}, "cannot segment"),
        ({"task": {"name": "segmentation", "model": "unet"}}, "needs masks"),
        ({"task": {"patch_size": [16, 16]}}, "segmentation only"),
        ({"task": {"norm": "group"}}, "task.norm"),
        ({"task": {"model": "unet"}}, "segmentation network"),
        ({"task": {"multi_label": True}}, "task.multi_label"),
        (
            {
                "data": {"source": "synthetic_lesions"},
                "task": {"sw_overlap": 1.0, "name": "segmentation", "model": "unet"},
            },
            "sw_overlap",
        ),
        (
            {"data": {"source": "synthetic_lesions"}, "task": {"num_classes": 3}},
            "task.num_classes = 2",
        ),
        (
            {
                "data": {"source": "synthetic_lesions", "spatial_dims": 4},
                "task": {"name": "segmentation", "model": "unet"},
            },
            "data.spatial_dims",
        ),
    ],
)
def test_tasks_models_and_data_that_do_not_fit_are_refused_naming_the_key(
    sections: dict[str, dict[str, Any]], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        config_from_dict(tiny_tables(**sections))


def test_densenet_on_images_too_small_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    tables = tiny_tables(task={"model": "densenet121"})  # 16 x 16 images
    config = load_config(write_config(tmp_path / "c.toml", tables))
    with pytest.raises(ConfigError, match="at least 32 pixels"):
        run_experiment(config=config, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def _tiny_example_overrides(dims: int, *, image_size: int) -> list[str]:
    return [
        f"data.image_size={image_size}",
        "data.n_patients=100",
        "partition.num_sites=2",
        f"task.patch_size=[{', '.join(['16'] * dims)}]",
        "task.width=4",
        "federation.rounds=1",
        "report.bootstrap_resamples=0",
        "runtime.device='cpu'",
    ]


def test_the_3d_segmentation_example_runs_from_the_command_line(tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "flmi.cli",
        "run",
        str(REPO / "examples" / "segmentation_3d.toml"),
        "--out",
        str(tmp_path / "run"),
    ]
    for override in _tiny_example_overrides(3, image_size=16):
        command += ["--set", override]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr
    assert "dice" in done.stdout and "hd95" in done.stdout
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["arms"]["pooled"]["global"]["dice"] is not None


def test_the_2d_segmentation_example_runs_with_two_lesion_classes(tmp_path: Path) -> None:
    overrides = [*_tiny_example_overrides(2, image_size=24), "baselines.local=false"]
    config = load_config(REPO / "examples" / "segmentation_2d.toml", overrides=overrides)
    result = run_experiment(config=config, out=None)
    assert set(result.arms["federated"].site_mean) >= {"dice_1", "dice_2", "hd95_1", "hd95_2"}
