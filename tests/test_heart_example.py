"""The Fed-Heart-Disease examples run on the real files (skipped where they are absent)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flmi.config import load_config
from flmi.simulation import run_experiment
from tests.conftest import REPO, SHARED_DATA

requires_heart = pytest.mark.skipif(
    not (SHARED_DATA / "heart_disease").is_dir(),
    reason="real Heart Disease files not found (the shared data folder is absent)",
)


@requires_heart
def test_heart_fedavg_example_trains_logistic_regression_on_four_hospitals(tmp_path: Path) -> None:
    overrides = ["federation.rounds=2", "federation.local_steps=5", "baselines.pooled_epochs=1"]
    config = load_config(REPO / "examples" / "heart_disease" / "fedavg.toml", overrides=overrides)
    run_experiment(config=config, out=tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert sorted(summary["arms"]["federated"]["per_site"]) == [
        "cleveland",
        "hungary",
        "switzerland",
        "va",
    ]
    assert summary["sites"]["switzerland"]["n_train"] == 30
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(x["arm"], x["round"]) for x in lines] == [
        ("federated", 1),
        ("federated", 2),
        ("pooled", 1),
    ]
    assert lines[0]["val"] == {}  # FLamby's protocol has no validation split
