"""`flmi run` under secure and homomorphic aggregation ends close to the plain run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from flmi.cli import main
from flmi.config import config_from_dict, load_config
from flmi.simulation import run_experiment
from tests.conftest import tiny_tables, write_config

SECTIONS = {"report": {"bootstrap_resamples": 0}, "federation": {"min_sites": 2}}


def _lines(out: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_flmi_run_with_secagg_ends_close_to_the_plain_run_and_counts_bytes(
    tmp_path: Path,
) -> None:
    plain_cfg = write_config(tmp_path / "plain.toml", tiny_tables(**SECTIONS))
    secure_cfg = write_config(
        tmp_path / "secagg.toml",
        tiny_tables(**SECTIONS, privacy={"aggregation": "secagg"}),
    )
    plain = run_experiment(config=load_config(plain_cfg), out=tmp_path / "plain")

    code = main(["run", str(secure_cfg), "--out", str(tmp_path / "sa")])

    assert code == 0
    secure_model = load_file(str(tmp_path / "sa" / "model.safetensors"))
    plain_model = load_file(str(tmp_path / "plain" / "model.safetensors"))
    for name, value in plain_model.items():
        np.testing.assert_allclose(secure_model[name], value, rtol=0, atol=1e-5)
    secure_lines, plain_lines = _lines(tmp_path / "sa"), _lines(tmp_path / "plain")
    for s, p in zip(secure_lines, plain_lines, strict=True):
        assert abs(s["global"]["accuracy"] - p["global"]["accuracy"]) <= 0.02
        assert s["bytes_up"] > p["bytes_up"] > 0  # masked int64 words, keys and shares
        assert s["bytes_down"] > p["bytes_down"] > 0
        assert s["sites_failed"] == {}
    summary = json.loads((tmp_path / "sa" / "summary.json").read_text())
    assert summary["privacy"]["aggregation"] == "secagg"
    assert plain.summary["privacy"]["aggregation"] == "plain"


def test_run_with_he_matches_the_plain_run(tmp_path: Path) -> None:
    plain = run_experiment(
        config=load_config(write_config(tmp_path / "p.toml", tiny_tables(**SECTIONS))), out=None
    )
    he_cfg = write_config(
        tmp_path / "he.toml", tiny_tables(**SECTIONS, privacy={"aggregation": "he"})
    )

    he = run_experiment(config=load_config(he_cfg), out=tmp_path / "he")

    for name, value in plain.params.items():
        np.testing.assert_allclose(he.params[name], value, rtol=0, atol=1e-5)
    lines = _lines(tmp_path / "he")
    assert lines[0]["bytes_up"] > lines[1]["bytes_up"] > 0  # keys in round 1 only


def test_a_site_outside_the_clip_range_drops_out_and_the_rest_aggregate(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "c.toml",
        tiny_tables(
            **SECTIONS,
            privacy={"aggregation": "secagg"},
            sites={"hospital_2": {"fault": "nan"}},
        ),
    )

    run_experiment(config=load_config(cfg), out=tmp_path / "run")

    for line in _lines(tmp_path / "run"):
        assert line["sites_failed"] == {"hospital_2": "non_finite_update"}
        assert line["global"]["loss"] is not None


@pytest.mark.parametrize("strategy", ["scaffold", "fednova", "fedbn", "fedadam"])
def test_linear_strategies_under_secagg_end_where_their_plain_runs_do(strategy: str) -> None:
    sections = {
        "report": {"bootstrap_resamples": 0},
        "federation": {"min_sites": 2, "optimizer": "sgd", "momentum": 0.0},
        "strategy": {"name": strategy},
    }
    plain = run_experiment(config=config_from_dict(tiny_tables(**sections)), out=None)

    secure = run_experiment(
        config=config_from_dict(tiny_tables(**sections, privacy={"aggregation": "secagg"})),
        out=None,
    )

    for name, value in plain.params.items():
        np.testing.assert_allclose(secure.params[name], value, rtol=0, atol=1e-5)
