"""Sites write state files only when they keep something; a stateful run still resumes exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from flmi.config import config_from_dict
from flmi.core.federation import RoundRecord
from flmi.simulation import run_experiment
from tests.conftest import tiny_tables


class _CrashError(RuntimeError):
    pass


def test_a_stateless_strategy_run_writes_no_per_site_state_file(tmp_path: Path) -> None:
    config = config_from_dict(tiny_tables(strategy={"name": "fedavg"}))
    run_experiment(config=config, out=tmp_path / "run")
    assert list((tmp_path / "run").rglob("site_state-*")) == []
    assert not (tmp_path / "run" / "sites").exists()


def test_scaffold_writes_its_control_variates_and_resumes_bit_for_bit(tmp_path: Path) -> None:
    config = config_from_dict(
        tiny_tables(strategy={"name": "scaffold"}, federation={"rounds": 3, "momentum": 0.0})
    )
    run_experiment(config=config, out=tmp_path / "straight")

    def crash_after_round_1(record: RoundRecord, _rounds: int) -> None:
        if record.rnd == 1:
            raise _CrashError

    with pytest.raises(_CrashError):
        run_experiment(config=config, out=tmp_path / "crashed", progress=crash_after_round_1)
    assert len(list((tmp_path / "crashed" / "sites").rglob("site_state-00001.safetensors"))) == 4
    run_experiment(config=config, out=tmp_path / "crashed", resume=True)

    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "crashed" / "model.safetensors"))
    assert all(np.array_equal(a[k], b[k]) for k in a)
