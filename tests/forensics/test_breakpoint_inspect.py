"""A run stopped at a breakpoint resumes exactly; inspection flags the odd update out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flmi.cli import main
from flmi.config import load_config
from flmi.core.errors import ConfigError
from flmi.forensics.breakpoint import BreakpointReached
from flmi.forensics.inspect import robust_z
from flmi.simulation import run_experiment
from tests.conftest import tiny_tables, write_config

ROUNDS = 4


def test_break_after_round_then_resume_gives_the_uninterrupted_model_byte_for_byte(
    tmp_path: Path,
) -> None:
    tables = tiny_tables(record={"updates": True}, strategy={"name": "fedadam"})
    tables["federation"]["rounds"] = ROUNDS
    path = write_config(tmp_path / "c.toml", tables)
    run_experiment(config=load_config(path), out=tmp_path / "straight")

    with pytest.raises(BreakpointReached):
        run_experiment(config=load_config(path), out=tmp_path / "broken", break_after_round=2)
    assert not (tmp_path / "broken" / "summary.json").exists()
    latest = json.loads((tmp_path / "broken" / "checkpoints" / "federated-latest.json").read_text())
    assert latest["round"] == 2
    run_experiment(config=load_config(path), out=tmp_path / "broken", resume=True)

    for name in ("model.safetensors", "model.json"):
        assert (tmp_path / "straight" / name).read_bytes() == (
            tmp_path / "broken" / name
        ).read_bytes()
    rounds = sorted((tmp_path / "broken" / "record" / "rounds").iterdir())
    assert [p.name for p in rounds] == [f"round-{r:05d}.json" for r in range(ROUNDS + 1)]


def test_flmi_run_break_after_round_exits_cleanly_and_resume_finishes(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.toml", tiny_tables())
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--break-after-round", "1"]) == 0
    assert not (out / "summary.json").exists()
    assert main(["run", str(path), "--out", str(out), "--resume"]) == 0
    assert (out / "summary.json").is_file()


@pytest.mark.parametrize("rnd", [0, 2])
def test_a_breakpoint_outside_the_rounds_left_is_refused(tmp_path: Path, rnd: int) -> None:
    config = load_config(write_config(tmp_path / "c.toml", tiny_tables()))  # 2 rounds
    with pytest.raises(ConfigError, match="--break-after-round"):
        run_experiment(config=config, out=tmp_path / "run", break_after_round=rnd)


def test_robust_z_scores_by_hand() -> None:
    # median 3, |x - 3| = 2, 1, 0, 1, 7 -> MAD 1; z = 0.6745 * (x - 3)
    got = robust_z([1.0, 2.0, 3.0, 4.0, 10.0])
    assert got == pytest.approx([-1.349, -0.6745, 0.0, 0.6745, 4.7215])
    # MAD 0 (most values equal): the scaled mean absolute deviation stands in
    z = robust_z([1.0, 1.0, 1.0, 5.0])
    assert z[:3] == [0.0, 0.0, 0.0] and z[3] == pytest.approx(4.0 / (1.253314 * 1.0))
    assert robust_z([2.0, 2.0]) == [0.0, 0.0]


def test_inspect_flags_the_site_whose_update_was_scaled(tmp_path: Path) -> None:
    tables = tiny_tables(
        record={"updates": True},
        sites={"hospital_3": {"fault": "scale", "fault_scale": 30.0}},
    )
    out = tmp_path / "run"
    run_experiment(config=load_config(write_config(tmp_path / "c.toml", tables)), out=out)
    json_out = tmp_path / "inspect.json"
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(["inspect", str(out), "--round", "2", "--json"]) == 0
    json_out.write_text(buffer.getvalue())
    report = json.loads(json_out.read_text())
    flagged = [s["site"] for s in report["sites"] if s["outlier"]]
    assert flagged == ["hospital_3"]
    norms = {s["site"]: s["norm"] for s in report["sites"]}
    assert norms["hospital_3"] > 5 * max(v for k, v in norms.items() if k != "hospital_3")
    assert set(report["sites"][0]["layers"]) == set(report["sites"][2]["layers"])
