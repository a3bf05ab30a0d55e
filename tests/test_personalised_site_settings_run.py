"""Personalised strategies under ``[sites.NAME]`` settings, end to end; a run that trains nothing.

A per-site setting wraps the strategy (``PerSiteSettings``). The wrapped
strategy must stay what it is: FedBN's sites keep their normalisation layers
(their partial updates are accepted, and there is no central score), IFCA's
sites are each scored with their cluster's model. A run whose rounds
aggregate nothing stops with an error instead of finishing as if it trained.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flmi.cli import main
from flmi.config import load_config
from flmi.core.keys import Arm, Split
from flmi.core.messages import EvaluateInstruction, EvaluateReply
from flmi.core.strategy import StateRecord
from flmi.report.rundir import RunDir
from flmi.runtime.inprocess import InProcessRuntime
from flmi.simulation import run_experiment
from flmi.strategies.ifca import Ifca, IfcaOptions
from tests.conftest import tiny_tables, write_config

SLOWER_SITE = {"hospital_1": {"lr": 0.001}}


def _lines(run: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_fedbn_with_a_per_site_learning_rate_trains_and_scores_each_site_alone(
    tmp_path: Path,
) -> None:
    tables = tiny_tables(strategy={"name": "fedbn"}, sites=SLOWER_SITE)
    config = load_config(write_config(tmp_path / "c.toml", tables))

    result = run_experiment(config=config, out=tmp_path / "run")

    lines = _lines(tmp_path / "run")
    assert [line["round"] for line in lines] == [1, 2]
    assert all(line["sites_failed"] == {} for line in lines)  # partial updates accepted
    assert all(line["global"] is None and len(line["per_site"]) == 4 for line in lines)
    assert all(0 < line["bytes_up"] < line["bytes_down"] for line in lines)  # norms stayed home
    assert result.arms[Arm.FEDERATED].global_metrics is None
    assert all(np.isfinite(v).all() for v in result.params.values())


def test_ifca_with_a_per_site_learning_rate_scores_each_site_with_its_clusters_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[dict[str, EvaluateInstruction]] = []
    evaluate = InProcessRuntime.evaluate

    def spy(
        self: InProcessRuntime, instructions: dict[str, EvaluateInstruction]
    ) -> dict[str, EvaluateReply]:
        asked.append(dict(instructions))
        return dict(evaluate(self, instructions))

    monkeypatch.setattr(InProcessRuntime, "evaluate", spy)
    tables = tiny_tables(
        strategy={"name": "ifca", "num_clusters": 2, "init_spread": 0.5}, sites=SLOWER_SITE
    )
    config = load_config(write_config(tmp_path / "c.toml", tables))

    run_experiment(config=config, out=tmp_path / "run")

    lines = _lines(tmp_path / "run")
    assert all(line["global"] is None and line["sites_failed"] == {} for line in lines)
    last = RunDir.open_for_resume(path=tmp_path / "run").latest_checkpoint(arm=Arm.FEDERATED)
    assert last is not None and last[0] == 2
    ifca = Ifca(hparams={}, options=IfcaOptions(num_clusters=2, init_spread=0.5), seed=0)
    state = ifca.state_from_record(StateRecord(tensors=last[2].tensors, meta=last[2].meta))
    assert dict(state.membership) == lines[-1]["strategy"]["membership"]
    final_test = [a for a in asked if {(i.rnd, i.split) for i in a.values()} == {(2, Split.TEST)}]
    assert final_test, "the final round scored no site"
    for instructions in final_test:
        assert sorted(instructions) == sorted(state.membership)
        for site, instruction in instructions.items():
            model = state.models[state.membership[site]]
            assert sorted(instruction.params) == sorted(model)
            for name in model:
                np.testing.assert_array_equal(instruction.params[name], model[name])


def test_a_run_whose_rounds_aggregate_nothing_exits_non_zero_naming_why_and_keeps_its_rounds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Every site is told to send NaN, so the server rejects every update of every round.
    tables = tiny_tables(
        sites={f"hospital_{i}": {"fault": "nan"} for i in range(1, 5)},
        federation={"rounds": 3, "max_failed_rounds": 2},
    )
    config = write_config(tmp_path / "c.toml", tables)
    out = tmp_path / "run"

    code = main(["run", str(config), "--out", str(out)])

    said = " ".join(capsys.readouterr().out.split())
    assert code == 2
    assert "error: round 2: 0 of 4 sampled sites gave a valid update" in said
    assert "site 'hospital_1': rejected_by_server" in said
    assert "federation.max_failed_rounds = 2" in said
    lines = _lines(out)
    assert [line["round"] for line in lines] == [1, 2]  # round 3 never ran; 1 and 2 are kept
    assert all(len(line["sites_failed"]) == 4 for line in lines)
    assert not (out / "summary.json").exists()
