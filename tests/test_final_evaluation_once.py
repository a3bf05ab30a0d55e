"""The final model is scored once at every site: the last round's evaluation serves the report."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import flmi.simulation
from flmi.config import load_config
from flmi.core.messages import EvaluateInstruction, EvaluateReply
from flmi.simulation import run_experiment
from flmi.site.site import Site
from tests.conftest import tiny_tables, write_config


def _run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, separate: bool) -> tuple[Any, Counter]:
    """Run the federation and both baselines; count site evaluations by (site, round, split)."""
    calls: Counter[tuple[str, int, str]] = Counter()
    evaluate = Site.evaluate

    def counted(self: Site, instruction: EvaluateInstruction) -> EvaluateReply:
        calls[(self.name, instruction.rnd, instruction.split)] += 1
        return evaluate(self, instruction)

    with monkeypatch.context() as patch:
        patch.setattr(Site, "evaluate", counted)
        if separate:  # the final model scored again after the loop, as it was before
            patch.setattr(flmi.simulation, "_final_scoring", lambda config, plan: None)
        tables = tiny_tables(
            baselines={"pooled": True, "local": True},
            data={"val_fraction": 0.25},  # the threshold is chosen on validation histograms
            report={"bootstrap_resamples": 20, "min_count": 1},
        )
        config = load_config(write_config(tmp_path / f"c{separate}.toml", tables))
        result = run_experiment(config=config, out=None)
    return result, calls


def _without_timings(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if not k.endswith("_s")}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def test_final_model_is_evaluated_once_per_site_and_split_and_the_summary_is_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    once, once_calls = _run(tmp_path, monkeypatch, separate=False)
    twice, twice_calls = _run(tmp_path, monkeypatch, separate=True)

    sites = ["hospital_1", "hospital_2", "hospital_3", "hospital_4"]
    # Round 2 is the last: the federated and pooled models at each site, and the
    # site's own local model, each scored once on test and once on validation.
    for site in sites:
        for split in ("test", "val"):
            assert once_calls[(site, 2, split)] == 3
            assert twice_calls[(site, 2, split)] == 6  # what the separate evaluation cost
            assert once_calls[(site, 1, split)] == twice_calls[(site, 1, split)] == 3
    assert _without_timings(once.summary) == _without_timings(twice.summary)
    federated = once.summary["arms"]["federated"]
    assert sorted(federated["ci"]["per_site"]) == sites
    assert federated["threshold"]["chosen_on"] != "none"
