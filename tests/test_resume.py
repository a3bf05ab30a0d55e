"""A run killed with SIGKILL and resumed ends exactly as a run that was never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from flmi.config import load_config
from flmi.core.errors import ConfigError, RunDirError
from flmi.simulation import run_experiment
from tests.conftest import tiny_tables, write_config

ROUNDS = 8


def _tables() -> dict:
    # SCAFFOLD keeps a control variate in every site's state: resuming must restore it.
    return tiny_tables(
        strategy={"name": "scaffold"},
        federation={"rounds": ROUNDS, "momentum": 0.0, "local_epochs": 2},
        data={"n_patients": 600},
        baselines={"pooled": True},
    )


def _latest_round(out: Path) -> int:
    pointer = out / "checkpoints" / "federated-latest.json"
    try:
        return int(json.loads(pointer.read_text())["round"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


def test_sigkill_after_round_2_then_resume_gives_the_uninterrupted_result(tmp_path: Path) -> None:
    config_path = write_config(tmp_path / "c.toml", _tables())
    straight = tmp_path / "straight"
    run_experiment(config=load_config(config_path), out=straight)

    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "flmi.cli", "run", str(config_path), "--out", str(killed)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while _latest_round(killed) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    interrupted_at = _latest_round(killed)
    # Polled every 10 ms, a run of 8 rounds cannot finish unseen; if it ever did,
    # the test would prove nothing, so that is a failure, not a skip.
    assert 2 <= interrupted_at < ROUNDS, f"killed at round {interrupted_at}, not mid-run"
    assert not (killed / "summary.json").exists()

    run_experiment(config=load_config(config_path), out=killed, resume=True)

    a = load_file(str(straight / "model.safetensors"))
    b = load_file(str(killed / "model.safetensors"))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    lines = [json.loads(x) for x in (killed / "metrics.jsonl").read_text().splitlines()]
    federated = [x["round"] for x in lines if x["arm"] == "federated"]
    assert federated == list(range(1, ROUNDS + 1))  # no gap, no duplicate
    assert [x["arm"] for x in lines].count("pooled") == ROUNDS
    theirs = json.loads((straight / "summary.json").read_text())["arms"]
    ours = json.loads((killed / "summary.json").read_text())["arms"]
    assert theirs == ours


def test_resuming_a_finished_run_changes_no_result(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path / "c.toml", tiny_tables()))
    run_experiment(config=config, out=tmp_path / "run")
    before = json.loads((tmp_path / "run" / "summary.json").read_text())["arms"]
    run_experiment(config=config, out=tmp_path / "run", resume=True)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["arms"] == before


def test_resume_with_a_different_config_is_refused_naming_the_key(tmp_path: Path) -> None:
    run_experiment(
        config=load_config(write_config(tmp_path / "c.toml", tiny_tables())), out=tmp_path / "run"
    )
    other = load_config(write_config(tmp_path / "d.toml", tiny_tables(federation={"lr": 0.5})))
    with pytest.raises(ConfigError, match="federation.lr"):
        run_experiment(config=other, out=tmp_path / "run", resume=True)


def test_resume_of_a_folder_without_a_run_is_refused(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path / "c.toml", tiny_tables()))
    with pytest.raises(RunDirError, match="holds no config.toml"):
        run_experiment(config=config, out=tmp_path / "empty", resume=True)
