from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from flmi.config import load_config
from flmi.core.errors import ConfigError, DataError
from flmi.data.tabular import load_csv_sites
from flmi.simulation import run_experiment
from tests.conftest import SHARED_DATA, tiny_tables, write_config

HAM = SHARED_DATA / "ham10000" / "HAM10000_metadata.csv"


def _csv(path: Path, *, n: int = 240, bad: str | None = None) -> Path:
    rng = np.random.default_rng(0)
    lines = ["age,score,site,label"]
    for i in range(n):
        site = ["north", "south", "east"][i % 3]
        label = int(rng.random() < 0.4)
        age = bad if bad is not None and i == 7 else f"{40 + 20 * rng.random() + 10 * label:.1f}"
        lines.append(f"{age},{rng.normal() + label:.3f},{site},{label}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _load(path: Path, **overrides: object) -> tuple:
    settings = dict(
        path=path,
        label_column="label",
        site_column="site",
        feature_columns=[],
        split_seed=0,
        test_fraction=0.25,
        val_fraction=0.1,
    )
    settings.update(overrides)
    return load_csv_sites(**settings)  # type: ignore[arg-type]


def test_sites_come_from_the_site_column_and_features_are_standardised_per_site(
    tmp_path: Path,
) -> None:
    data, classes = _load(_csv(tmp_path / "t.csv"))
    assert sorted(data.sites) == ["east", "north", "south"] and classes == ["0", "1"]
    for splits in data.sites.values():
        assert len(splits.train) + len(splits.val) + len(splits.test) == 80
        np.testing.assert_allclose(splits.train.x.mean(axis=0), 0.0, atol=1e-5)
        assert splits.train.x.shape[1] == 2


def test_a_missing_column_is_named_with_the_columns_there_are(tmp_path: Path) -> None:
    with pytest.raises(
        DataError, match=r"data.site_column = 'hospital' is not a column.*age, score, site, label"
    ):
        _load(_csv(tmp_path / "t.csv"), site_column="hospital")


def test_a_non_numeric_feature_names_the_column_and_value(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"column 'age' holds 'old', which is not a number"):
        _load(_csv(tmp_path / "t.csv", bad="old"))


def test_rows_with_missing_values_are_left_out(tmp_path: Path) -> None:
    data, _ = _load(_csv(tmp_path / "t.csv", bad="?"))
    assert sum(len(s.train) + len(s.val) + len(s.test) for s in data.sites.values()) == 239


def test_csv_federation_runs_with_one_site_per_column_value(tmp_path: Path) -> None:
    tables = tiny_tables(
        data={
            "source": "csv",
            "path": str(_csv(tmp_path / "t.csv")),
            "label_column": "label",
            "site_column": "site",
            "val_fraction": 0.1,
        },
        partition={"method": "natural", "num_sites": 3},
        task={"model": "logistic"},
    )
    for key in ("image_size", "n_patients"):
        del tables["data"][key]
    run_experiment(
        config=load_config(write_config(tmp_path / "c.toml", tables)), out=tmp_path / "run"
    )
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert sorted(summary["arms"]["federated"]["per_site"]) == ["east", "north", "south"]


def test_site_count_that_differs_from_the_column_is_a_config_error(tmp_path: Path) -> None:
    tables = tiny_tables(
        data={
            "source": "csv",
            "path": str(_csv(tmp_path / "t.csv")),
            "label_column": "label",
            "site_column": "site",
        },
        partition={"method": "natural", "num_sites": 4},
        task={"model": "logistic"},
    )
    for key in ("image_size", "n_patients"):
        del tables["data"][key]
    with pytest.raises(ConfigError, match="names 3 sites"):
        run_experiment(
            config=load_config(write_config(tmp_path / "c.toml", tables)), out=tmp_path / "run"
        )
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(
    not HAM.is_file(), reason=f"HAM10000 metadata not found at {HAM} (shared data absent)"
)
def test_ham10000_metadata_splits_into_its_four_source_sites() -> None:
    data, classes = _load(HAM, label_column="dx", site_column="dataset", feature_columns=["age"])
    assert sorted(data.sites) == ["rosendahl", "vidir_modern", "vidir_molemax", "vienna_dias"]
    assert classes == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
