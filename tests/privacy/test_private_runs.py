"""Whole runs under [privacy]: epsilon in every round and in summary.json, config errors, resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file

from flmi.config import config_from_dict
from flmi.core.errors import ConfigError
from flmi.core.federation import RoundRecord
from flmi.simulation import run_experiment
from tests.conftest import tiny_tables


def _lines(out: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_client_dp_reports_epsilon_every_round_and_a_per_site_ledger(tmp_path: Path) -> None:
    tables = tiny_tables(
        privacy={"dp": "client", "noise_multiplier": 1.0, "clip_norm": 0.5},
        federation={"rounds": 3},
    )
    run_experiment(config=config_from_dict(tables), out=tmp_path / "run")
    lines = [x for x in _lines(tmp_path / "run") if x["arm"] == "federated"]
    spent = [x["privacy"]["epsilon"] for x in lines]
    assert spent == sorted(spent) and spent[0] > 0 and len(set(spent)) == 3
    last = lines[-1]["privacy"]
    assert set(last["sites"]) == {"hospital_1", "hospital_2", "hospital_3", "hospital_4"}
    assert all(s["steps"] == 3 for s in last["sites"].values())
    assert "privacy" not in lines[-1]["strategy"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["privacy"]["dp"] == "client"
    assert summary["privacy"]["epsilon"] == last["epsilon"]
    assert summary["privacy"]["sample_rate"] == 1.0
    assert summary["privacy"]["private_arms"] == ["federated"]


@pytest.mark.parametrize(
    ("strategy", "privacy", "needle"),
    [
        ("fedbn", {"dp": "sample"}, "BatchNorm mixes"),
        ("fedpxn", {"dp": "sample"}, "BatchNorm mixes"),
        ("ifca", {"dp": "sample"}, "IFCA picks a cluster"),
        ("fedprox", {"dp": "sample"}, "proximal term"),
        ("median", {"dp": "client"}, "unweighted mean"),
        ("fednova", {"dp": "client"}, "unweighted mean"),
        ("scaffold", {"dp": "client"}, "unweighted mean"),
        ("scaffold", {"dp": "sample"}, "SCAFFOLD's gradient correction"),
        (
            "fedavg",
            {"dp": "client", "adaptive_clip": True, "noise_multiplier": 3.0},
            "adaptive_clip_count_noise",
        ),
        ("fedavg", {"dp": "sample", "delta": 0.0}, "privacy.delta"),
        ("fedavg", {"dp": "sample", "noise_multiplier": -1.0}, "privacy.noise_multiplier"),
        ("fedavg", {"dp": "maybe"}, "privacy.dp"),
        ("fedavg", {"dp": "client", "aggregation": "he"}, "privacy.noise_at = 'site'"),
        ("median", {"dp": "sample", "aggregation": "secagg"}, "coordinate-wise median"),
    ],
)
def test_privacy_config_errors_name_the_key_and_write_nothing(
    tmp_path: Path, strategy: str, privacy: dict[str, Any], needle: str
) -> None:
    tables = tiny_tables(strategy={"name": strategy}, privacy=privacy, federation={"momentum": 0.0})
    with pytest.raises(ConfigError, match=needle):
        config = config_from_dict(tables)
        run_experiment(config=config, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


class _CrashError(RuntimeError):
    pass


@pytest.mark.parametrize("insecure", [True, False], ids=["seeded-noise", "secure-noise"])
def test_sample_dp_run_resumed_after_a_crash_continues_the_accounting_of_a_straight_run(
    tmp_path: Path, insecure: bool
) -> None:
    # Seeded noise (tests only): the resumed model is the straight one bit for bit. Secure
    # noise: fresh every run, so the models differ, but the accounting (noise multiplier,
    # sample rate, steps: independent of the noise drawn) continues exactly.
    tables = tiny_tables(
        privacy={
            "dp": "sample",
            "noise_multiplier": 1.1,
            "max_grad_norm": 1.0,
            **({"insecure_reproducible_noise": True} if insecure else {}),
        },
        federation={"rounds": 3, "batch_size": 32},
        data={"n_patients": 200},
    )
    config = config_from_dict(tables)
    run_experiment(config=config, out=tmp_path / "straight")

    def crash_after_round_1(record: RoundRecord, _rounds: int) -> None:
        if record.rnd == 1:
            raise _CrashError

    with pytest.raises(_CrashError):
        run_experiment(config=config, out=tmp_path / "crashed", progress=crash_after_round_1)
    run_experiment(config=config, out=tmp_path / "crashed", resume=True)

    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "crashed" / "model.safetensors"))
    assert all(np.array_equal(a[k], b[k]) for k in a) is insecure
    straight, resumed = _lines(tmp_path / "straight"), _lines(tmp_path / "crashed")
    assert [x["privacy"] for x in straight] == [x["privacy"] for x in resumed]
    assert straight[-1]["privacy"]["epsilon"] > straight[0]["privacy"]["epsilon"] > 0


def test_client_dp_with_noise_at_the_sites_reports_what_the_server_itself_learns(
    tmp_path: Path,
) -> None:
    tables = tiny_tables(
        privacy={
            "dp": "client",
            "noise_at": "site",
            "noise_multiplier": 1.0,
            "clip_norm": 0.5,
            "adaptive_clip": True,
        },
        federation={"rounds": 2},
    )
    run_experiment(config=config_from_dict(tables), out=tmp_path / "run")
    last = [x for x in _lines(tmp_path / "run") if x["arm"] == "federated"][-1]["privacy"]
    assert last["noise_at"] == "site"
    assert last["clip_norm"] != 0.5  # the clip adapted
    for site in last["sites"].values():
        # Each update reaches the server with a quarter of the noise's variance.
        assert site["epsilon_against_server"] > site["epsilon"] > 0
