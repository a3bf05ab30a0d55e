"""model_card.json / .md: every field a reader of a released model needs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flmi.config import load_config
from flmi.core.errors import RunDirError
from flmi.report.model_card import model_card
from flmi.simulation import run_experiment
from tests.conftest import tiny_tables, write_config


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("card")
    tables = tiny_tables(federation={"rounds": 1}, strategy={"name": "fedprox", "mu": 0.1})
    run_experiment(config=load_config(write_config(tmp / "c.toml", tables)), out=tmp / "run")
    return tmp / "run"


def test_model_card_json_holds_every_field(run_dir: Path) -> None:
    card = json.loads((run_dir / "model_card.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())

    assert card["task"]["classes"] == [0, 1] and card["task"]["positive_label"] == 1
    assert card["model"]["input_shape"] == [1, 16, 16]
    assert {s: v["n_train"] for s, v in card["sites"].items()} == {
        s: v["n_train"] for s, v in summary["sites"].items()
    }
    assert card["training"]["algorithm"] == "fedprox"
    assert card["training"]["strategy_options"] == {"mu": 0.1}
    assert card["training"]["federation"]["lr"] == 0.05
    assert card["privacy"] == summary["privacy"]  # the run's [privacy] settings
    assert card["privacy"]["aggregation"] == "plain"
    fed = summary["arms"]["federated"]
    auc = card["metrics"]["global"]["auc"]
    assert auc["value"] == fed["global"]["auc"] and auc["ci95"] == fed["ci"]["global"]["auc"]
    for site, metrics in card["metrics"]["per_site"].items():
        assert metrics["auc"]["ci95"] == fed["ci"]["per_site"][site]["auc"]
    assert card["threshold"] == fed["threshold"]
    assert card["seed"] == 0 and card["versions"]["torch"]
    for key in ("intended_use", "out_of_scope_use", "limitations", "ethical_considerations"):
        assert card[key].startswith("TO FILL IN")


def test_model_card_markdown_has_every_section(run_dir: Path) -> None:
    text = (run_dir / "model_card.md").read_text()
    for heading in (
        "## Task",
        "## Sites",
        "## Training",
        "## Privacy",
        "## Metrics",
        "## Operating threshold",
        "## Versions",
        "## Intended use",
        "## Limitations",
    ):
        assert heading in text
    assert "hospital_1" in text and "fedprox" in text


def test_model_card_of_an_unfinished_run_names_the_missing_file(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("")
    with pytest.raises(RunDirError, match="summary.json is missing"):
        model_card(tmp_path)


def test_resuming_a_finished_run_keeps_the_card_the_user_filled_in(tmp_path: Path) -> None:
    tables = tiny_tables(federation={"rounds": 1}, report={"bootstrap_resamples": 0})
    config = load_config(write_config(tmp_path / "c.toml", tables))
    run_experiment(config=config, out=tmp_path / "run")
    card = tmp_path / "run" / "model_card.md"
    card.write_text(card.read_text().replace("TO FILL IN", "Breast ultrasound triage study", 1))

    run_experiment(config=config, out=tmp_path / "run", resume=True)

    assert "Breast ultrasound triage study" in card.read_text()
