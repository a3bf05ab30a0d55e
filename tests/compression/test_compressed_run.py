"""A compressed federation in process: fewer bytes up, the model still learns, state kept."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flmi.config import config_from_dict
from flmi.report.rundir import MODEL
from flmi.simulation import run_experiment
from tests.conftest import tiny_tables


def _rounds(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _run(tmp_path: Path, name: str, compression: dict[str, Any]) -> list[dict[str, Any]]:
    config = config_from_dict(tiny_tables(compression=compression))
    out = tmp_path / name
    run_experiment(config=config, out=out)
    return _rounds(out)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("compression", "least_ratio"),
    [
        # A tiny model (2310 weights a site): the tensor names in each payload's
        # header weigh a few hundred bytes, so the ratios sit below 32 / bits.
        ({"method": "quantize", "bits": 8}, 3.0),
        ({"method": "quantize", "bits": 2}, 6.0),
        ({"method": "topk", "fraction": 0.05}, 4.0),
        ({"method": "powersgd", "rank": 1}, 1.2),
    ],
)
def test_compressed_updates_count_fewer_bytes_up_and_the_same_bytes_down(
    tmp_path: Path, compression: dict[str, Any], least_ratio: float
) -> None:
    full = _run(tmp_path, "full", {"method": "none"})
    small = _run(tmp_path, "small", compression)
    for a, b in zip(full, small, strict=True):
        assert b["bytes_down"] == a["bytes_down"]
        assert a["bytes_up"] / b["bytes_up"] >= least_ratio
        assert b["sites_failed"] == {}


@pytest.mark.slow
@pytest.mark.parametrize("noise_at", ["site", "server"])
def test_client_dp_runs_with_compressed_updates_and_spends_a_finite_budget(
    tmp_path: Path, noise_at: str
) -> None:
    privacy = {
        "dp": "client",
        "noise_at": noise_at,
        "clip_norm": 0.5,
        "insecure_reproducible_noise": True,
    }
    config = config_from_dict(
        tiny_tables(compression={"method": "topk", "fraction": 0.1}, privacy=privacy)
    )
    run_experiment(config=config, out=tmp_path / "run")
    rounds = _rounds(tmp_path / "run")
    assert [r["round"] for r in rounds] == [1, 2]
    assert all(r["sites_failed"] == {} for r in rounds)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert 0 < summary["privacy"]["epsilon"] < float("inf")


@pytest.mark.slow
def test_a_quantised_run_repeats_bit_for_bit_for_the_same_seed(tmp_path: Path) -> None:
    # Stochastic rounding is seeded per site and round like training: same seed, same model.
    compression = {"method": "quantize", "bits": 4}
    first, second = (_run(tmp_path, name, compression) for name in ("a", "b"))
    assert [r["bytes_up"] for r in first] == [r["bytes_up"] for r in second]
    models = [(tmp_path / name / MODEL).read_bytes() for name in ("a", "b")]
    assert models[0] == models[1]
