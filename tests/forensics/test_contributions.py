"""Contributions from a record: exact Shapley over FedAvg coalitions, round by round."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from flmi.cli import main
from flmi.config import load_config
from flmi.core.messages import ClientUpdate, UpdateKind
from flmi.core.params import Params
from flmi.forensics.contribution import ContributionSettings, site_contributions
from flmi.forensics.reader import RecordReader
from flmi.forensics.record import UpdateRecorder
from flmi.forensics.replay import counterfactual, recorded_strategy
from flmi.forensics.scoring import scorer_for
from flmi.simulation import run_experiment
from flmi.strategies.fedavg import FedAvg
from tests.conftest import tiny_tables, write_config

EXACT = ContributionSettings(method="exact", between_eps=0.0)
TARGET = np.array([1.0, -2.0, 0.5], dtype=np.float32)


def _utility(params: Params) -> float:
    """A cheap score: closeness to a fixed target."""
    return -float(np.sum((params["w"].astype(np.float64) - TARGET) ** 2))


def _update(site: str, w: list[float], n: int) -> ClientUpdate:
    return ClientUpdate(
        site=site,
        params={"w": np.array(w, dtype=np.float32)},
        kind=UpdateKind.FULL,
        num_examples=n,
        num_steps=1,
        metrics={},
    )


def _record(run_dir: Path, rounds: list[list[ClientUpdate]]) -> RecordReader:
    """A record written as the round loop writes it: FedAvg over the given updates."""
    strategy = FedAvg(hparams={})
    params = {"w": np.zeros(3, dtype=np.float32)}
    recorder = UpdateRecorder(run_dir=run_dir, strategy=strategy.name)
    sites = sorted({u.site for updates in rounds for u in updates})
    recorder.start(sites=sites, initial=params, after_round=0)
    state = strategy.init(params)
    for rnd, updates in enumerate(rounds, start=1):
        before = strategy.state_to_record(state)
        state, params = strategy.aggregate(rnd, state, updates)
        recorder.on_aggregate(rnd, state_before=before, updates=updates, params=params)
    return RecordReader(run_dir=run_dir)


def test_efficiency_over_rounds_the_values_add_up_to_the_runs_gain(tmp_path: Path) -> None:
    reader = _record(
        tmp_path,
        [
            [_update("a", [1, 0, 0], 10), _update("b", [0, -1, 1], 30), _update("c", [2, 2, 2], 5)],
            [_update("a", [1, -2, 0], 10), _update("b", [0.5, -1, 0.5], 30)],
        ],
    )
    found = site_contributions(reader, FedAvg(hparams={}), _utility, settings=EXACT)
    gain = _utility(reader.global_params(2)) - _utility(reader.global_params(0))
    assert abs(sum(found.shapley.values()) - gain) < 1e-9
    assert found.rounds_scored == [1, 2] and found.rounds_truncated == []
    # c sat out round 2: its value is its round-1 value alone
    assert set(found.shapley) == {"a", "b", "c"}


def test_symmetry_two_sites_sending_the_same_update_get_equal_values(tmp_path: Path) -> None:
    reader = _record(
        tmp_path,
        [[_update("a", [1, -1, 0], 20), _update("b", [1, -1, 0], 20), _update("c", [0, 0, 3], 20)]],
    )
    found = site_contributions(reader, FedAvg(hparams={}), _utility, settings=EXACT)
    assert abs(found.shapley["a"] - found.shapley["b"]) < 1e-9
    assert found.shapley["c"] < found.shapley["a"]
    assert found.ranking()[-1] == "c"


def test_leave_one_out_by_hand(tmp_path: Path) -> None:
    # One round from w = 0: a sends the target, b sends 0 (the global model back). Equal weights.
    reader = _record(tmp_path, [[_update("a", TARGET.tolist(), 1), _update("b", [0, 0, 0], 1)]])
    found = site_contributions(reader, FedAvg(hparams={}), _utility, settings=EXACT)
    d2 = float(np.sum(TARGET.astype(np.float64) ** 2))  # v(empty) = v(b) = -d2, v(a) = 0
    # v(ab) = -d2 / 4; LOO of a = v(ab) - v(b); of b = v(ab) - v(a)
    assert found.leave_one_out["a"] == pytest.approx(-d2 / 4 + d2)
    assert found.leave_one_out["b"] == pytest.approx(-d2 / 4)
    # A site that only sends the global model back dilutes the others under FedAvg: below 0.
    assert found.shapley["b"] == pytest.approx(0.5 * (0.0 + (-d2 / 4 - 0.0)))
    assert found.shapley["a"] == pytest.approx(0.5 * (d2 + (-d2 / 4 + d2)))


def test_a_round_that_moves_the_score_too_little_is_truncated(tmp_path: Path) -> None:
    reader = _record(
        tmp_path,
        [
            [_update("a", [1, -2, 0.5], 1), _update("b", [0, 0, 0], 1)],
            # both send round 1's model (target / 2) back: the score does not move
            [_update("a", [0.5, -1, 0.25], 1), _update("b", [0.5, -1, 0.25], 1)],
        ],
    )
    found = site_contributions(
        reader, FedAvg(hparams={}), _utility, settings=ContributionSettings(between_eps=1e-6)
    )
    assert found.rounds_truncated == [2]


@pytest.fixture(scope="module")
def faulty_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("faulty")
    tables = tiny_tables(
        record={"updates": True, "contributions": True},
        sites={"hospital_1": {"fault": "label_flip"}},
        data={"n_patients": 400},
    )
    tables["federation"]["rounds"] = 3
    run_experiment(config=load_config(write_config(folder / "c.toml", tables)), out=folder / "run")
    return folder / "run"


def test_a_site_that_trained_on_flipped_labels_ranks_last(faulty_run: Path) -> None:
    summary = json.loads((faulty_run / "summary.json").read_text())
    section = summary["contributions"]
    assert section["ranking"][-1] == "hospital_1"
    assert min(section["sites"], key=lambda s: section["sites"][s]["shapley"]) == "hospital_1"
    assert section["sites"]["hospital_1"]["shapley"] < 0
    assert section["metric"] == "auc" and section["strategy"] == "fedavg"
    assert (faulty_run / "contributions.json").is_file()


def test_exact_values_on_the_run_add_up_to_the_validation_gain(faulty_run: Path) -> None:
    reader = RecordReader(run_dir=faulty_run)
    scorer = scorer_for(faulty_run, metric="auc")
    found = site_contributions(reader, recorded_strategy(reader), scorer, settings=EXACT)
    final = scorer(load_file(str(faulty_run / "model.safetensors")))
    initial = scorer(reader.global_params(0))
    assert abs(sum(found.shapley.values()) - (final - initial)) < 1e-9


def test_leaving_the_faulty_site_out_improves_the_validation_auc(faulty_run: Path) -> None:
    reader = RecordReader(run_dir=faulty_run)
    scorer = scorer_for(faulty_run, metric="auc")
    without = counterfactual(
        reader, recorded_strategy(reader), from_round=1, without=["hospital_1"]
    )
    assert scorer(without) > scorer(load_file(str(faulty_run / "model.safetensors"))) + 0.05


def test_flmi_contributions_prints_the_ranking_and_the_report_draws_it(
    faulty_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["contributions", str(faulty_run), "--method", "gtg", "--json"]) == 0
    section = json.loads(capsys.readouterr().out)
    assert section["method"] == "gtg" and section["ranking"][-1] == "hospital_1"
    assert main(["report", str(faulty_run)]) == 0
    page = (faulty_run / "report.html").read_text()
    section_html = page.split('<section id="contributions">')[1].split("</section>")[0]
    assert "src='data:image/png;base64," in section_html and "(gtg;" in section_html


def test_scoring_on_a_drawn_subset_uses_that_many_examples_every_call(faulty_run: Path) -> None:
    scorer = scorer_for(faulty_run, metric="auc", max_examples=40)
    final = load_file(str(faulty_run / "model.safetensors"))
    assert scorer.num_examples == 40
    assert scorer(final) == scorer(final)  # the same examples each time
