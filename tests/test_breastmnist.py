"""The shipped BreastMNIST example runs on the real file (skipped where it is absent)."""

from __future__ import annotations

import json
from pathlib import Path

from flmi.config import load_config
from flmi.simulation import run_experiment
from tests.conftest import BREASTMNIST, REPO, requires_breastmnist


@requires_breastmnist
def test_breastmnist_example_points_at_the_shared_file() -> None:
    config = load_config(REPO / "examples" / "breastmnist.toml")
    assert Path(config.data.path) == BREASTMNIST.resolve()
    assert config.task.positive_label == 0  # malignant


@requires_breastmnist
def test_breastmnist_example_trains_one_round_on_the_real_data(tmp_path: Path) -> None:
    overrides = [
        "federation.rounds=1",
        "task.width=4",
        "baselines.pooled=false",
        "baselines.local=false",
    ]
    config = load_config(REPO / "examples" / "breastmnist.toml", overrides=overrides)
    run_experiment(config=config, out=tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert sum(site["n_train"] for site in summary["sites"].values()) == 546
    counts = [site["label_counts"] for site in summary["sites"].values()]
    # 147 malignant training images; a site's count under report.min_count (5) is suppressed.
    shown = [c["0"] for c in counts if c.get("0") is not None]
    hidden = sum(1 for c in counts if "0" in c and c["0"] is None)
    assert all(n >= 5 for n in shown)
    assert sum(shown) <= 147 <= sum(shown) + 4 * hidden
    assert 0.0 <= summary["arms"]["federated"]["global"]["auc"] <= 1.0


@requires_breastmnist
def test_the_few_labels_example_gives_two_small_labeled_and_two_unlabeled_hospitals(
    tmp_path: Path,
) -> None:
    overrides = ["federation.rounds=1", "task.width=4"]
    path = REPO / "examples" / "breastmnist_semi_supervised_few_labels.toml"
    config = load_config(path, overrides=overrides)
    run_experiment(config=config, out=tmp_path / "run")
    sites = json.loads((tmp_path / "run" / "summary.json").read_text())["sites"]
    for name in ("site_1", "site_2"):
        assert 20 <= sites[name]["n_train"] <= 35 and "n_unlabeled" not in sites[name]
    for name in ("site_3", "site_4"):
        assert sites[name]["n_train"] == 0 and sites[name]["label_counts"] == {}
        assert sites[name]["n_unlabeled"] > 100


@requires_breastmnist
def test_the_scanner_example_runs_and_records_a_different_scanner_for_each_hospital(
    tmp_path: Path,
) -> None:
    overrides = ["federation.rounds=1", "task.width=4"]
    path = REPO / "examples" / "breastmnist_semi_supervised_scanners.toml"
    config = load_config(path, overrides=overrides)
    run_experiment(config=config, out=tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    scanners = summary["site_scanners"]
    assert sorted(scanners) == ["site_1", "site_2", "site_3", "site_4"]
    assert len({s["gamma"] for s in scanners.values()}) == 4
    assert summary["sites"]["site_3"]["n_unlabeled"] > 100
    assert 0.0 <= summary["arms"]["federated"]["global"]["auc"] <= 1.0
