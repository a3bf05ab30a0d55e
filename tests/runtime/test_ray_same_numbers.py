"""Sites on Ray actors give the in-process model bit for bit, on one worker and on two."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flmi.config import config_from_dict
from flmi.simulation import run_experiment
from tests.runtime.ray_support import ray_tables

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'flmi[ray]')")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[None]:
    """One local Ray instance of 2 CPUs for the whole module (starting one takes seconds)."""
    monkey = pytest.MonkeyPatch()
    monkey.setenv("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()
    monkey.undo()


def _model(tables: dict[str, Any], out: Path) -> bytes:
    run_experiment(config=config_from_dict(tables), out=out)
    return (out / "model.safetensors").read_bytes()


def _rounds(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    "sections",
    [
        pytest.param({"strategy": {"name": "fedavg"}}, id="fedavg"),
        pytest.param(
            {"strategy": {"name": "scaffold"}, "federation": {"optimizer": "sgd", "momentum": 0.0}},
            id="scaffold-site-state",
        ),
        pytest.param({"strategy": {"name": "fedbn"}}, id="fedbn-local-layers"),
        pytest.param({"privacy": {"aggregation": "secagg"}}, id="fedavg-secagg"),
    ],
)
def test_the_ray_runtime_writes_the_in_process_model_byte_for_byte_on_one_and_two_workers(
    ray_instance: None, tmp_path: Path, sections: dict[str, dict[str, Any]]
) -> None:
    # Arrange
    tables = ray_tables(**sections)
    expected = _model(tables, tmp_path / "inprocess")

    # Act
    on_ray = {
        workers: _model(
            ray_tables(**sections, runtime={"name": "ray", "max_workers": workers}),
            tmp_path / f"ray-{workers}",
        )
        for workers in (1, 2)
    }

    # Assert
    assert on_ray[1] == expected
    assert on_ray[2] == expected
    for workers in (1, 2):
        rounds = _rounds(tmp_path / f"ray-{workers}")
        assert [r["round"] for r in rounds] == [1, 2]
        assert all(r["sites_failed"] == {} for r in rounds)
        in_process = _rounds(tmp_path / "inprocess")
        assert [r["per_site"] for r in rounds] == [r["per_site"] for r in in_process]
