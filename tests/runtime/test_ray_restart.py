"""A worker killed mid-round comes back: its sites reload their checkpointed state and rejoin."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flmi.config import config_from_dict
from flmi.core.federation import RoundRecord
from flmi.report.rundir import RunDir
from flmi.runtime.ray import RayRuntime
from flmi.simulation import run_experiment
from flmi.site.state import SiteState
from tests.runtime.ray_support import KillOnceTask, descendants, ray_tables, running

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'flmi[ray]')")

pytestmark = pytest.mark.slow


def test_a_worker_killed_mid_round_restarts_with_its_sites_checkpointed_scaffold_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange: SCAFFOLD over three sites on two workers; after round 1 the
    # marker is set, so round 2's first local fit kills its own worker.
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    marker = tmp_path / "kill-next-fit"
    out = tmp_path / "run"
    runtimes: list[RayRuntime] = []
    start = RayRuntime.start

    def keep(*, recipe: Any, site_names: Any) -> RayRuntime:
        runtimes.append(start(recipe=recipe, site_names=site_names))
        return runtimes[-1]

    monkeypatch.setattr(RayRuntime, "start", keep)
    seen: dict[int, str] = {}
    after_restart: dict[str, SiteState] = {}
    before = set(descendants(os.getpid()))

    def during(record: RoundRecord, rounds: int) -> None:
        seen.update(descendants(os.getpid()))
        if record.rnd == 1:
            marker.touch()
        if record.rnd == 2:
            after_restart.update(runtimes[0].site_states())

    tables = ray_tables(
        strategy={"name": "scaffold"},
        federation={"optimizer": "sgd", "momentum": 0.0, "rounds": 3},
        runtime={"name": "ray", "max_workers": 2},
    )

    # Act
    run_experiment(
        config=config_from_dict(tables), out=out, progress=during, task=KillOnceTask(marker=marker)
    )

    # Assert: round 2 fails the killed worker's sites with a reason code ...
    rounds = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1, 2, 3] and not marker.exists()
    everyone = {"hospital_1", "hospital_2", "hospital_3"}
    assert rounds[0]["sites_failed"] == {}
    failed = rounds[1]["sites_failed"]
    assert sorted(failed) in (["hospital_1", "hospital_3"], ["hospital_2"])
    assert set(failed.values()) == {"unavailable"}
    # ... the restarted worker's sites are back for the round's evaluation and round 3 ...
    assert set(rounds[1]["per_site"]) == everyone
    assert rounds[2]["sites_failed"] == {} and set(rounds[2]["per_site"]) == everyone
    # ... the restarted sites hold their round-1 (checkpointed) control variates, not zeros ...
    for name in failed:
        held = after_restart[name]
        saved = SiteState.load(RunDir(path=out).site_dir(name), max_round=1)
        assert held.round == saved.round == 1
        assert sorted(held.tensors) == sorted(saved.tensors) and saved.tensors
        for key, value in saved.tensors.items():
            np.testing.assert_array_equal(held.tensors[key], value)
        assert any(np.abs(v).sum() > 0 for v in saved.tensors.values())
    # ... and the run finished, leaving none of its Ray processes running.
    assert (out / "model.safetensors").is_file()
    started = [pid for pid in seen if pid not in before]
    assert started and [pid for pid in started if running(pid)] == []
    assert not ray.is_initialized()
