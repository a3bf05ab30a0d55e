"""Fed-TCGA-BRCA loader: FLamby's regions and split, features and targets, bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flmi.core.errors import DataError
from flmi.data.tcga_brca import REGIONS, feature_names, load_tcga_brca
from tests.conftest import SHARED_DATA

TCGA = SHARED_DATA / "tcga_brca"
requires_tcga = pytest.mark.skipif(
    not (TCGA / "brca.csv").is_file(),
    reason=f"Fed-TCGA-BRCA not found at {TCGA} (the shared data folder is absent)",
)


@requires_tcga
def test_regions_have_flambys_train_and_test_sizes() -> None:
    data = load_tcga_brca(directory=TCGA)
    sizes = {s: (len(v.train), len(v.test)) for s, v in data.sites.items()}

    assert sizes == {
        "northeast": (248, 63),
        "south": (156, 40),
        "west": (164, 42),
        "midwest": (129, 33),
        "europe": (129, 33),
        "canada": (40, 11),
    }
    assert len(data.central_test) == 222


@requires_tcga
def test_features_are_the_39_clinical_columns_and_targets_event_then_time() -> None:
    data = load_tcga_brca(directory=TCGA)
    train = data.sites["northeast"].train

    assert train.x.shape[1] == 39 and train.x.dtype == np.float32
    assert feature_names(TCGA)[0] == "age_at_index"
    assert set(np.unique(train.y[:, 0])) <= {0.0, 1.0}
    assert train.y[:, 1].max() > 100  # follow-up in days
    total_events = sum(
        int(s.train.y[:, 0].sum() + s.test.y[:, 0].sum()) for s in data.sites.values()
    )
    assert total_events <= 151  # 151 events among 1096 patients, 8 of them outside the split


@requires_tcga
def test_validation_split_is_carved_from_training_only() -> None:
    data = load_tcga_brca(directory=TCGA, val_fraction=0.2)
    site = data.sites["south"]

    assert len(site.train) + len(site.val) == 156 and len(site.val) > 0 and len(site.test) == 40


def test_missing_folder_or_file_names_the_path_and_the_files_expected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such folder.*brca.csv"):
        load_tcga_brca(directory=tmp_path / "absent")
    with pytest.raises(DataError, match="no such file.*brca.csv"):
        load_tcga_brca(directory=tmp_path)


def _write(folder: Path, *, fold: str = "train_0", value: str = "1") -> None:
    header = ["pid", *[f"f{i}" for i in range(39)], "E", "T"]
    row = ["TCGA-AA-0001", value, *["0"] * 38, "1", "10"]
    (folder / "brca.csv").write_text(",".join(header) + "\n" + ",".join(row) + "\n")
    (folder / "train_test_split.csv").write_text(f"pid,fold,fold2\nTCGA-AA-0001,train,{fold}\n")


def test_unknown_fold_and_non_numeric_values_are_named(tmp_path: Path) -> None:
    _write(tmp_path, fold="train_9")
    with pytest.raises(DataError, match="fold2 'train_9'"):
        load_tcga_brca(directory=tmp_path)
    _write(tmp_path, value="old")
    with pytest.raises(DataError, match="line 2 holds a value that is not a number"):
        load_tcga_brca(directory=tmp_path)


def test_a_region_without_patients_is_an_error_that_names_it(tmp_path: Path) -> None:
    _write(tmp_path)
    with pytest.raises(DataError, match=f"center 0 \\({REGIONS[0]}\\) has no train or test rows"):
        load_tcga_brca(directory=tmp_path)
