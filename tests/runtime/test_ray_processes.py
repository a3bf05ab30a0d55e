"""A run on Ray leaves no process it started; a worker killed mid-run fails its sites' round."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from flmi.config import config_from_dict
from flmi.core.federation import RoundRecord
from flmi.simulation import run_experiment
from tests.runtime.ray_support import descendants, ray_tables, running

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'flmi[ray]')")

pytestmark = pytest.mark.slow


def _workers(processes: dict[int, str]) -> list[int]:
    """The pids of the site-hosting actors (Ray titles them ``ray::SiteHost``)."""
    return sorted(pid for pid, cmd in processes.items() if cmd.startswith("ray::SiteHost"))


def test_a_run_that_starts_its_own_ray_leaves_none_of_its_processes_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    assert not ray.is_initialized()
    before = set(descendants(os.getpid()))
    seen: dict[int, str] = {}

    def during(record: RoundRecord, rounds: int) -> None:
        seen.update(descendants(os.getpid()))

    tables = ray_tables(runtime={"name": "ray", "max_workers": 2})

    # Act
    run_experiment(config=config_from_dict(tables), out=tmp_path / "run", progress=during)

    # Assert
    started = {pid: cmd for pid, cmd in seen.items() if pid not in before}
    assert any("raylet" in cmd for cmd in started.values())
    assert any("gcs_server" in cmd for cmd in started.values())
    assert len(_workers(started)) == 2
    assert not ray.is_initialized()
    assert [pid for pid in started if running(pid)] == []


def test_a_worker_killed_after_round_one_fails_its_sites_training_in_round_two_and_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange: two workers over three sites: one owns hospital_1 and hospital_3.
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    killed: list[int] = []

    def kill_first_worker(record: RoundRecord, rounds: int) -> None:
        if record.rnd == 1:
            first = _workers(descendants(os.getpid()))[0]
            os.kill(first, signal.SIGKILL)
            killed.append(first)

    tables = ray_tables(runtime={"name": "ray", "max_workers": 2})

    # Act
    run_experiment(
        config=config_from_dict(tables), out=tmp_path / "run", progress=kill_first_worker
    )

    # Assert
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    rounds = [json.loads(line) for line in lines]
    assert [r["round"] for r in rounds] == [1, 2] and len(killed) == 1
    assert rounds[0]["sites_failed"] == {}
    failed = rounds[1]["sites_failed"]
    assert sorted(failed) in (["hospital_1", "hospital_3"], ["hospital_2"])
    assert set(failed.values()) == {"unavailable"}
    # The worker is restarted at once: its sites are back for the round's evaluation.
    assert set(rounds[1]["per_site"]) == {"hospital_1", "hospital_2", "hospital_3"}
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert not ray.is_initialized()


def test_ctrl_c_after_round_one_stops_ray_and_resuming_on_ray_gives_the_in_process_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange: SCAFFOLD, so the resumed sites must read their control variates back.
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    sections: dict[str, dict[str, object]] = {
        "strategy": {"name": "scaffold"},
        "federation": {"optimizer": "sgd", "momentum": 0.0},
    }
    run_experiment(config=config_from_dict(ray_tables(**sections)), out=tmp_path / "inprocess")
    on_ray = config_from_dict(ray_tables(**sections, runtime={"name": "ray", "max_workers": 2}))
    seen: dict[int, str] = {}

    def interrupt(record: RoundRecord, rounds: int) -> None:
        seen.update(descendants(os.getpid()))
        raise KeyboardInterrupt

    # Act
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config=on_ray, out=tmp_path / "ray", progress=interrupt)
    left_running = [pid for pid in seen if running(pid)]
    run_experiment(config=on_ray, out=tmp_path / "ray", resume=True)

    # Assert
    assert len(_workers(seen)) == 2 and left_running == []
    assert not ray.is_initialized()
    model = "model.safetensors"
    assert (tmp_path / "ray" / model).read_bytes() == (tmp_path / "inprocess" / model).read_bytes()
