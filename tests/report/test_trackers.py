"""TensorBoard and MLflow logging: off by default; when on, the same numbers as metrics.jsonl."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from flmi.config import load_config
from flmi.core.errors import ConfigError
from flmi.report.trackers import MLFLOW_EXPERIMENT, open_file_store, round_scalars
from flmi.simulation import run_experiment
from tests.conftest import tiny_tables, write_config


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("trackers")
    tables = tiny_tables(
        runtime={"tensorboard": True, "mlflow": True},
        baselines={"pooled": True},
        report={"bootstrap_resamples": 0},
    )
    run_experiment(config=load_config(write_config(tmp / "c.toml", tables)), out=tmp / "run")
    return tmp / "run"


def _expected(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for text in (run_dir / "metrics.jsonl").read_text().splitlines():
        line = json.loads(text)
        for tag, value in round_scalars(line).items():
            out.setdefault(tag, []).append((int(line["round"]), value))
    return out


def test_tensorboard_event_file_holds_every_rounds_metrics_as_in_metrics_jsonl(
    tracked_run: Path,
) -> None:
    expected = _expected(tracked_run)
    events = EventAccumulator(str(tracked_run / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()

    assert set(events.Tags()["scalars"]) == set(expected)
    assert "federated/global/auc" in expected and "pooled/per_site/hospital_1/auc" in expected
    for tag, values in expected.items():
        logged = [(e.step, e.value) for e in events.Scalars(tag)]
        assert [s for s, _ in logged] == [s for s, _ in values]
        assert [v for _, v in logged] == pytest.approx([v for _, v in values], rel=1e-6)


def test_mlflow_file_store_holds_every_rounds_metrics_as_in_metrics_jsonl(
    tracked_run: Path,
) -> None:
    expected = _expected(tracked_run)
    store = open_file_store(tracked_run / "mlruns")
    experiment = store.get_experiment_by_name(MLFLOW_EXPERIMENT)
    (run,) = store.search_runs([experiment.experiment_id], None, 1, max_results=10)

    assert run.info.status == "FINISHED"
    assert run.data.params["federation.lr"] == "0.05"
    assert set(run.data.metrics) == set(expected)
    for tag, values in expected.items():
        history = store.get_metric_history(run.info.run_id, tag)
        assert sorted((m.step, m.value) for m in history) == sorted(values)


def test_trackers_are_off_by_default(tmp_path: Path) -> None:
    tables = tiny_tables(federation={"rounds": 1}, report={"bootstrap_resamples": 0})
    run_experiment(
        config=load_config(write_config(tmp_path / "c.toml", tables)), out=tmp_path / "r"
    )
    assert not (tmp_path / "r" / "tensorboard").exists()
    assert not (tmp_path / "r" / "mlruns").exists()


@pytest.mark.parametrize(
    ("key", "module"), [("tensorboard", "torch.utils.tensorboard"), ("mlflow", "mlflow")]
)
def test_a_missing_tracker_package_names_the_extra_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str, module: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import now raises ImportError
    if module == "mlflow":
        monkeypatch.setitem(sys.modules, "mlflow.store.tracking.file_store", None)
    tables = tiny_tables(runtime={key: True})
    config = load_config(write_config(tmp_path / "c.toml", tables))

    with pytest.raises(ConfigError, match=rf"runtime.{key} = true needs .*flmi\[trackers\]"):
        run_experiment(config=config, out=tmp_path / "r")
    assert not (tmp_path / "r").exists()
