"""End-to-end runs of `flmi run` on small generated hospitals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from flmi.cli import main
from flmi.config import load_config
from flmi.simulation import run_experiment
from tests.conftest import tiny_tables, write_config

METRIC_KEYS = {"loss", "accuracy", "balanced_accuracy", "auc", "sensitivity", "specificity"}


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def test_run_writes_every_record_of_every_arm(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.toml", tiny_tables(baselines={"pooled": True, "local": True})
    )
    out = tmp_path / "run"

    assert main(["run", str(config), "--out", str(out)]) == 0

    assert {p.name for p in out.iterdir()} >= {
        "config.toml",
        "metrics.jsonl",
        "summary.json",
        "model.safetensors",
        "model.json",
        "checkpoints",
        "curves.json",
        "report.html",
        "model_card.md",
        "model_card.json",
    }
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["arm"], r["round"]) for r in lines] == [
        (arm, rnd) for arm in ("federated", "pooled", "local") for rnd in (1, 2)
    ]
    for line in lines:
        assert set(line) >= {
            "round",
            "arm",
            "global",
            "per_site",
            "wall_s",
            "bytes_down",
            "bytes_up",
        }
        assert set(line["global"]) == METRIC_KEYS
        assert sorted(line["per_site"]) == ["hospital_1", "hospital_2", "hospital_3", "hospital_4"]
    assert lines[0]["bytes_down"] > 0 and lines[0]["bytes_up"] > 0
    assert lines[-1]["bytes_down"] == 0  # nothing leaves a site in the local arm

    summary = _summary(out)
    assert set(summary["arms"]) == {"federated", "pooled", "local"}
    for arm in summary["arms"].values():
        assert set(arm) == {"global", "per_site", "site_mean", "ci", "threshold", "at_threshold"}
        assert set(arm["site_mean"]) == METRIC_KEYS
        assert sorted(arm["ci"]["per_site"]) == sorted(arm["per_site"])
    federated = summary["arms"]["federated"]
    low, high = federated["ci"]["global"]["accuracy"]
    assert low <= federated["global"]["accuracy"] <= high  # values stay plain numbers
    assert summary["arms"]["local"]["ci"]["global"] is None
    assert summary["rounds"] == 2 and summary["seed"] == 0 and summary["torch_threads"] == 1
    assert {"flmi", "torch", "numpy", "monai"} <= set(summary["versions"])
    site = summary["sites"]["hospital_1"]
    assert site["n_train"] == sum(site["label_counts"].values())

    model = load_file(str(out / "model.safetensors"))
    assert "head.weight" in model and model["head.weight"].dtype == np.float32
    assert load_config(out / "config.toml") == load_config(config)


def test_final_model_equals_the_last_checkpoint(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path / "c.toml", tiny_tables()))
    result = run_experiment(config=config, out=tmp_path / "run")
    latest = json.loads((tmp_path / "run" / "checkpoints" / "federated-latest.json").read_text())
    assert latest["round"] == 2
    checkpoint = load_file(str(tmp_path / "run" / "checkpoints" / latest["file"]))
    for name, value in result.params.items():
        np.testing.assert_array_equal(checkpoint[f"params/{name}"], value)


def test_same_config_and_seed_give_identical_metrics_and_another_seed_does_not(
    tmp_path: Path,
) -> None:
    tables = tiny_tables(baselines={"pooled": True, "local": True})
    config = write_config(tmp_path / "c.toml", tables)
    for name, seed in [("a", 0), ("b", 0), ("c", 1)]:
        assert (
            main(
                [
                    "run",
                    str(config),
                    "--out",
                    str(tmp_path / name),
                    "--set",
                    f"federation.seed={seed}",
                ]
            )
            == 0
        )
    a, b, c = (_summary(tmp_path / n) for n in "abc")
    assert a["arms"] == b["arms"]
    assert a["arms"] != c["arms"]
    model_a = load_file(str(tmp_path / "a" / "model.safetensors"))
    model_b = load_file(str(tmp_path / "b" / "model.safetensors"))
    assert all(np.array_equal(model_a[k], model_b[k]) for k in model_a)


def test_flmi_command_runs_as_a_separate_process(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.toml", tiny_tables(federation={"rounds": 1}))
    done = subprocess.run(
        [sys.executable, "-m", "flmi.cli", "run", str(config), "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "round   1/1" in done.stdout and "site_mean" in done.stdout


def test_strategies_lists_fedavg(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["strategies"]) == 0
    assert "fedavg" in capsys.readouterr().out
