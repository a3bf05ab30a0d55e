"""End-to-end runs of the regression and survival tasks, with the data QA and KM outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from lifelines import KaplanMeierFitter

from flmi.cli import main
from flmi.config import load_config
from flmi.data.tcga_brca import load_tcga_brca
from flmi.report.html import build_report
from flmi.simulation import run_experiment
from tests.conftest import REPO, SHARED_DATA, tiny_tables, write_config

TCGA = SHARED_DATA / "tcga_brca"
requires_tcga = pytest.mark.skipif(
    not (TCGA / "brca.csv").is_file(),
    reason=f"Fed-TCGA-BRCA not found at {TCGA} (the shared data folder is absent)",
)
REGRESSION_KEYS = {"loss", "mae", "rmse", "r2"}


def _summary(out: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((out / "summary.json").read_text())


def test_age_regression_runs_every_arm_with_intervals_and_a_data_section(tmp_path: Path) -> None:
    tables = tiny_tables(
        data={"source": "synthetic_age", "image_size": 16, "n_patients": 240},
        task={"name": "regression", "loss": "l1", "target_offset": 55.0, "target_scale": 15.0},
        baselines={"pooled": True, "local": True},
    )
    config = write_config(tmp_path / "c.toml", tables)
    out = tmp_path / "run"

    assert main(["run", str(config), "--out", str(out)]) == 0

    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {r["arm"] for r in lines} == {"federated", "pooled", "local"}
    assert all(set(r["global"]) == REGRESSION_KEYS for r in lines if r["global"])
    summary = _summary(out)
    federated = summary["arms"]["federated"]
    assert set(federated["ci"]["global"]) == REGRESSION_KEYS
    low, high = federated["ci"]["global"]["mae"]
    assert low <= federated["global"]["mae"] <= high
    assert "label_counts" not in summary["sites"]["hospital_1"]  # ages are never listed
    data = summary["data"]
    assert data["sites"]["hospital_1"]["label_kind"] == "histogram"
    assert len(data["sites"]["hospital_1"]["intensity"]) == 20


def test_regression_from_a_csv_with_a_numeric_label_learns_the_target(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = ["site,a,b,age"]
    for i in range(240):
        a, b = rng.standard_normal(2)
        rows.append(f"s{i % 2},{a:.4f},{b:.4f},{50 + 8 * a - 4 * b + rng.normal(0, 1):.3f}")
    (tmp_path / "table.csv").write_text("\n".join(rows) + "\n")
    tables = tiny_tables(
        data={"source": "csv", "path": "table.csv", "label_column": "age", "site_column": "site"},
        partition={"method": "natural", "num_sites": 2},
        task={"name": "regression", "model": "linear", "target_offset": 50.0, "target_scale": 10.0},
        federation={"rounds": 5, "lr": 0.1, "batch_size": 16, "momentum": 0.0},
    )
    config = load_config(write_config(tmp_path / "c.toml", tables))

    result = run_experiment(config=config, out=None)

    final = result.arms["federated"].global_metrics
    assert final is not None and final["r2"] > 0.9 and final["mae"] < 2.0


def test_a_text_label_is_refused_for_regression_naming_the_column(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text(
        "site,a,age\ns0,1,old\ns0,2,40\ns0,3,41\ns1,1,3\ns1,2,4\ns1,3,5\n"
    )
    tables = tiny_tables(
        data={"source": "csv", "path": "t.csv", "label_column": "age", "site_column": "site"},
        partition={"method": "natural", "num_sites": 2},
        task={"name": "regression", "model": "linear"},
    )
    config = load_config(write_config(tmp_path / "c.toml", tables))
    out = tmp_path / "run"

    with pytest.raises(Exception, match="label column 'age' holds 'old'"):
        run_experiment(config=config, out=out)
    assert not out.exists()  # nothing written


def test_classification_summary_gains_a_data_section_with_class_counts(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path / "c.toml", tiny_tables()))

    result = run_experiment(config=config, out=None)

    data = result.summary["data"]
    assert data["flag_distance"] == 0.25 and data["min_count"] == 5
    assert data["sites"]["hospital_1"]["label_kind"] == "classes"
    assert "label_counts" in result.summary["sites"]["hospital_1"]


@requires_tcga
def test_tcga_survival_run_scores_each_region_and_writes_exact_km_curves(tmp_path: Path) -> None:
    config = load_config(
        REPO / "examples" / "tcga_brca" / "fedavg.toml",
        overrides=[
            "federation.rounds=2",
            "federation.local_steps=10",
            "baselines.pooled_epochs=1",
            "baselines.local=false",
            "report.bootstrap_resamples=20",
        ],
    )
    out = tmp_path / "run"

    result = run_experiment(config=config, out=out)

    federated = result.arms["federated"]
    assert set(federated.per_site) == {"canada", "europe", "midwest", "northeast", "south", "west"}
    assert all(
        0 <= m["c_index"] <= 1 for m in federated.per_site.values() if not np.isnan(m["c_index"])
    )
    assert "c_index" in result.arms["pooled"].site_mean
    km = json.loads((out / "km.json").read_text())
    data = load_tcga_brca(directory=TCGA)
    targets = np.concatenate([np.concatenate([s.train.y, s.test.y]) for s in data.sites.values()])
    reference = KaplanMeierFitter().fit(targets[:, 1], targets[:, 0]).survival_function_.iloc[:, 0]
    federated_km = km["federated"]
    expected = reference.loc[federated_km["time"]].to_numpy()
    np.testing.assert_allclose(federated_km["survival"], expected, rtol=0, atol=1e-9)
    assert km["mode"] == "exact" and (out / "km.png").is_file()
    assert _summary(out)["data"]["sites"]["canada"]["labels"] == {"event": None, "censored": None}
    page = build_report(out).read_text()
    assert "no class labels" in page and "Kaplan-Meier curves" in page
    everything = "".join(p.read_text(errors="ignore") for p in out.rglob("*") if p.is_file())
    assert "TCGA-" not in everything  # no patient barcode anywhere in the run directory


@requires_tcga
def test_binned_km_mode_is_recorded_and_rows_respect_min_count(tmp_path: Path) -> None:
    config = load_config(
        REPO / "examples" / "tcga_brca" / "fedavg.toml",
        overrides=[
            "federation.rounds=1",
            "federation.local_steps=2",
            "baselines.pooled=false",
            "baselines.local=false",
            "report.bootstrap_resamples=0",
            "report.km_bin_width=90",
            "report.min_count=10",
        ],
    )
    out = tmp_path / "run"

    run_experiment(config=config, out=out)

    km = json.loads((out / "km.json").read_text())
    assert km["mode"] == "binned" and km["bin_width"] == 90 and km["min_count"] == 10
    assert all(t % 90 == 0 for t in km["federated"]["time"])
    for curve in km["sites"].values():
        leaving = -np.diff(curve["at_risk"])  # patients leaving at each row but the last
        assert (leaving >= 10).all()


@pytest.mark.parametrize(
    ("name", "client_lr", "options"),
    [
        ("fedavg", 0.1, {}),
        ("fedprox", 0.1, {"mu": 0.1}),
        ("fedadam", 0.01, {"server_lr": 0.1, "beta1": 0.9, "beta2": 0.999, "tau": 1e-8}),
    ],
)
def test_tcga_examples_hold_flambys_benchmark_settings(
    name: str, client_lr: float, options: dict[str, float]
) -> None:
    config = load_config(REPO / "examples" / "tcga_brca" / f"{name}.toml")

    f, b = config.federation, config.baselines
    assert (config.task.name, config.data.source, config.partition.num_sites) == (
        "survival",
        "tcga_brca",
        6,
    )
    assert (f.rounds, f.local_steps, f.batch_size, f.optimizer, f.momentum) == (5, 100, 8, "sgd", 0)
    assert f.lr == client_lr and config.strategy.options == options
    assert (b.pooled_optimizer, b.pooled_lr, b.pooled_batch_size, b.pooled_epochs) == (
        "adam",
        0.1,
        8,
        30,
    )


class _CrashError(Exception):
    """Stands in for a killed process: raised from the progress callback after a round."""


@requires_tcga
def test_interrupted_survival_run_resumes_to_the_same_model_bit_for_bit(tmp_path: Path) -> None:
    overrides = [
        "federation.rounds=4",
        "federation.local_steps=10",
        "baselines.pooled=false",
        "baselines.local=false",
        "report.bootstrap_resamples=0",
    ]
    config = load_config(REPO / "examples" / "tcga_brca" / "fedadam.toml", overrides=overrides)
    straight = run_experiment(config=config, out=tmp_path / "straight")

    def crash_after_round_2(record: object, rounds: int) -> None:
        if getattr(record, "rnd", 0) == 2:
            raise _CrashError

    with pytest.raises(_CrashError):
        run_experiment(config=config, out=tmp_path / "crashed", progress=crash_after_round_2)
    resumed = run_experiment(config=config, out=tmp_path / "crashed", resume=True)

    assert set(resumed.params) == set(straight.params)
    for name, value in straight.params.items():
        np.testing.assert_array_equal(resumed.params[name], value)
    lines = (tmp_path / "crashed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["round"] for x in lines] == [1, 2, 3, 4]
