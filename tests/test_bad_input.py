"""Bad input stops a run with a clear error that names the culprit, and loses nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flmi.config import load_config
from flmi.core.errors import (
    ConfigError,
    DataError,
    FlmiError,
    LabelError,
    PartitionError,
    RunDirError,
)
from flmi.simulation import run_experiment
from tests.conftest import tiny_tables, write_config


def _medmnist_tables(path: Path, **sections: dict) -> dict:
    tables = tiny_tables(
        data={"source": "medmnist", "path": str(path)},
        partition={"method": "iid", "num_sites": 2, "min_examples_per_site": 1},
        **sections,
    )
    del tables["data"]["image_size"], tables["data"]["n_patients"]
    return tables


def _write_npz(path: Path, *, n: int = 40, labels: np.ndarray | None = None) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (
            labels if labels is not None and split == "train" else rng.integers(0, 2, (n, 1))
        ).astype(np.uint8)
    np.savez(path, **arrays)
    return path


def _expect_nothing_written(
    tmp_path: Path, tables: dict, error: type[FlmiError], match: str
) -> None:
    """Run, expect ``error`` matching ``match``, and check the run directory was never created."""
    out = tmp_path / "run"
    with pytest.raises(error, match=match):
        run_experiment(config=load_config(write_config(tmp_path / "c.toml", tables)), out=out)
    assert not out.exists()


def test_unknown_config_key_is_named_and_nothing_is_written(tmp_path: Path) -> None:
    tables = tiny_tables(federation={"local_epoch": 2})
    with pytest.raises(ConfigError, match="unknown key 'federation.local_epoch'"):
        load_config(write_config(tmp_path / "c.toml", tables))


def test_unknown_config_key_from_the_command_line_exits_2_and_writes_nothing(
    tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    from flmi.cli import main

    config = write_config(tmp_path / "c.toml", tiny_tables())
    code = main(
        ["run", str(config), "--out", str(tmp_path / "run"), "--set", "federation.roundz=3"]
    )
    assert code == 2
    assert "unknown key 'federation.roundz'" in capsys.readouterr().out
    assert not (tmp_path / "run").exists()


def test_an_error_that_names_a_toml_table_prints_it_whole(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    # "[partition]" in a message is the table to edit, not console markup to swallow.
    from flmi.cli import main

    tables = tiny_tables(partition={"method": "natural", "min_examples_per_site": 10_000})
    config = write_config(tmp_path / "c.toml", tables)

    code = main(["run", str(config), "--out", str(tmp_path / "run")])

    assert code == 2
    out = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert "[partition] min_examples_per_site = 10000" in out


def test_missing_data_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "breastmnist.npz"
    _expect_nothing_written(tmp_path, _medmnist_tables(missing), DataError, "breastmnist.npz")


@pytest.mark.parametrize(
    ("section", "missing"),
    [
        ("data", "data.path: no such file: "),
        ("task", "task.init_weights: no such file "),
    ],
)
def test_a_missing_input_file_is_the_only_line_the_command_prints(
    tmp_path: Path, capsys, section: str, missing: str
) -> None:  # type: ignore[no-untyped-def]
    # No "flmi: fedavg on 4 sites -> ..." first: the run never started.
    from flmi.cli import main

    nowhere = tmp_path / "nowhere"
    if section == "data":
        tables = _medmnist_tables(nowhere / "breastmnist.npz")
    else:
        tables = tiny_tables(task={"init_weights": str(nowhere / "model.safetensors")})
    config = write_config(tmp_path / "c.toml", tables)

    code = main(["run", str(config), "--out", str(tmp_path / "run")])

    out = capsys.readouterr().out
    assert code == 2 and not (tmp_path / "run").exists()
    assert out.startswith(f"error: {missing}{nowhere}") and out.count("\n") == 1
    assert "flmi:" not in out


def test_corrupt_npz_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.npz"
    bad.write_bytes(b"this is not a zip archive" * 100)
    _expect_nothing_written(tmp_path, _medmnist_tables(bad), DataError, "corrupt.npz")


def test_truncated_npz_names_the_file(tmp_path: Path) -> None:
    good = _write_npz(tmp_path / "good.npz")
    cut = tmp_path / "truncated.npz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    _expect_nothing_written(tmp_path, _medmnist_tables(cut), DataError, "truncated.npz")


def test_label_outside_the_task_classes_names_the_label_and_the_classes(tmp_path: Path) -> None:
    labels = np.zeros((40, 1), dtype=np.uint8)
    labels[7] = 5
    npz = _write_npz(tmp_path / "labels.npz", labels=labels)
    _expect_nothing_written(
        tmp_path, _medmnist_tables(npz), LabelError, r"label 5 is outside the task's classes 0\.\.1"
    )


def test_site_below_min_examples_names_the_site_and_its_count(tmp_path: Path) -> None:
    tables = tiny_tables(partition={"min_examples_per_site": 60})
    _expect_nothing_written(
        tmp_path, tables, PartitionError, r"site 'hospital_\d' has \d+ training examples"
    )


def test_existing_run_directory_is_never_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "summary.json").write_text('{"earlier": "run"}')
    config = load_config(write_config(tmp_path / "c.toml", tiny_tables()))
    with pytest.raises(RunDirError, match="already holds files"):
        run_experiment(config=config, out=out)
    assert [p.name for p in out.iterdir()] == ["summary.json"]
    assert (out / "summary.json").read_text() == '{"earlier": "run"}'


def test_cuda_without_a_gpu_is_a_config_error(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present, so device = 'cuda' is valid here")
    tables = tiny_tables(runtime={"device": "cuda"})
    _expect_nothing_written(tmp_path, tables, ConfigError, "runtime.device = 'cuda'")
