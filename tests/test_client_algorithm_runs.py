"""FedDyn and MOON end to end: their site state survives a crash, bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from flmi.config import config_from_dict
from flmi.core.federation import RoundRecord
from flmi.core.keys import Extra
from flmi.simulation import run_experiment
from tests.conftest import tiny_tables


class _CrashError(RuntimeError):
    pass


@pytest.mark.parametrize(
    ("strategy", "kept"), [("feddyn", Extra.FEDDYN_GRAD), ("moon", Extra.MOON_PREVIOUS)]
)
def test_a_run_resumed_after_a_crash_ends_bit_for_bit_as_a_straight_run(
    tmp_path: Path, strategy: str, kept: str
) -> None:
    config = config_from_dict(tiny_tables(strategy={"name": strategy}, federation={"rounds": 3}))
    run_experiment(config=config, out=tmp_path / "straight")

    def crash_after_round_1(record: RoundRecord, _rounds: int) -> None:
        if record.rnd == 1:
            raise _CrashError

    with pytest.raises(_CrashError):
        run_experiment(config=config, out=tmp_path / "crashed", progress=crash_after_round_1)
    # The sites kept the algorithm's own state after round 1 ...
    states = sorted((tmp_path / "crashed").rglob("site_state-00001.safetensors"))
    assert len(states) == 4
    assert all(any(k.startswith(kept) for k in load_file(str(p))) for p in states)
    run_experiment(config=config, out=tmp_path / "crashed", resume=True)

    # ... and resuming from it gives the run that never stopped.
    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "crashed" / "model.safetensors"))
    assert all(np.array_equal(a[k], b[k]) for k in a)
