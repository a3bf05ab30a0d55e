"""A run's curves.json and operating threshold: from the sites' histograms, chosen on validation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flmi.config import load_config
from flmi.report.curves import choose_threshold, histogram_from_json
from flmi.simulation import run_experiment
from tests.conftest import tiny_tables, write_config


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("curves")
    # min_count = 1: these tests check the curves' arithmetic on raw counts (suppression of
    # small cells, on by default, is tested in tests/site/test_small_cells.py).
    tables = tiny_tables(
        baselines={"pooled": False, "local": True},
        federation={"rounds": 3},
        report={"bootstrap_resamples": 20, "min_count": 1},
    )
    run_experiment(config=load_config(write_config(tmp / "c.toml", tables)), out=tmp / "run")
    return tmp / "run"


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def test_each_sites_histogram_auc_agrees_with_its_reported_auc_within_the_binning_bound(
    run_dir: Path,
) -> None:
    summary, curves = _json(run_dir / "summary.json"), _json(run_dir / "curves.json")
    fed, arm = summary["arms"]["federated"], curves["arms"]["federated"]
    pairs = [
        (fed["per_site"][s]["auc"], arm["test"]["per_site"][s]["roc"]) for s in fed["per_site"]
    ]
    # No central histogram is written: the central test set is the sites' test splits, whose
    # counts less the sites' own would give back what a site suppressed.
    assert arm["test"]["global"] is None and fed["at_threshold"]["global"] is None
    for exact, roc in pairs:
        assert abs(roc["auc"] - exact) <= roc["auc_binning_bound"] + 1e-9


def test_histograms_count_every_test_patient_once_and_hold_no_scores(run_dir: Path) -> None:
    summary, curves = _json(run_dir / "summary.json"), _json(run_dir / "curves.json")
    bins = curves["bins"]
    for site, info in summary["sites"].items():
        h = curves["arms"]["federated"]["test"]["per_site"][site]
        assert len(h["positives"]) == len(h["negatives"]) == bins
        assert sum(h["positives"]) + sum(h["negatives"]) == info["n_test"]
        positives = info["label_counts_by_split"]["test"].get(str(curves["positive_label"]), 0)
        assert sum(h["positives"]) == positives
        assert all(isinstance(c, int) for c in h["positives"] + h["negatives"])


def test_threshold_in_summary_is_the_one_the_validation_histograms_give(run_dir: Path) -> None:
    summary, curves = _json(run_dir / "summary.json"), _json(run_dir / "curves.json")
    for name in ("federated", "local"):
        arm = curves["arms"][name]
        val = histogram_from_json(arm["val"]["overall"], positive_label=curves["positive_label"])
        again = choose_threshold(val=val, bins=curves["bins"])
        assert summary["arms"][name]["threshold"] == again.to_json() == arm["threshold"]
        assert summary["arms"][name]["threshold"]["chosen_on"] == "val"


def test_sensitivity_and_specificity_at_the_threshold_are_reported_per_site_on_test(
    run_dir: Path,
) -> None:
    fed = _json(run_dir / "summary.json")["arms"]["federated"]
    at = fed["at_threshold"]
    assert set(at["per_site"]) == set(fed["per_site"])
    for counts in [at["overall"], *at["per_site"].values()]:
        assert set(counts) == {"tp", "fn", "fp", "tn", "sensitivity", "specificity"}
    assert isinstance(fed["global"]["auc"], float)  # the metrics themselves stay plain numbers


def test_a_run_without_validation_splits_records_the_default_threshold(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = ["age,site,label"]
    for i in range(120):
        label = int(rng.random() < 0.4)
        rows.append(f"{rng.normal() + label:.3f},{['a', 'b'][i % 2]},{label}")
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    tables = tiny_tables(
        data={"source": "csv", "path": str(tmp_path / "t.csv"), "label_column": "label"},
        partition={"method": "natural", "num_sites": 2},
        task={"model": "logistic"},
    )
    tables["data"] = {
        k: v for k, v in tables["data"].items() if k not in ("image_size", "n_patients")
    }
    tables["data"].update(site_column="site", val_fraction=0.0)

    run_experiment(
        config=load_config(write_config(tmp_path / "c.toml", tables)), out=tmp_path / "r"
    )

    threshold = _json(tmp_path / "r" / "summary.json")["arms"]["federated"]["threshold"]
    assert (threshold["value"], threshold["method"], threshold["chosen_on"]) == (
        0.5,
        "default",
        "none",
    )
    assert "no validation split" in threshold["note"]


def test_a_target_sensitivity_is_reached_on_validation(tmp_path: Path) -> None:
    tables = tiny_tables(
        federation={"rounds": 1},
        report={"bootstrap_resamples": 0, "target_sensitivity": 0.9, "min_count": 1},
    )

    run_experiment(
        config=load_config(write_config(tmp_path / "c.toml", tables)), out=tmp_path / "r"
    )

    threshold = _json(tmp_path / "r" / "summary.json")["arms"]["federated"]["threshold"]
    assert threshold["method"] == "target_sensitivity" and threshold["target_sensitivity"] == 0.9
    assert threshold["val_sensitivity"] >= 0.9 and threshold["chosen_on"] == "val"
