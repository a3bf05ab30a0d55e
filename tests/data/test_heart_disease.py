from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flmi.core.errors import DataError
from flmi.data.heart_disease import FILES, NUM_FEATURES, file_md5, load_heart_disease
from tests.conftest import SHARED_DATA

HEART = SHARED_DATA / "heart_disease"
requires_heart = pytest.mark.skipif(
    not HEART.is_dir(), reason=f"real Heart Disease files not found at {HEART} (shared data absent)"
)


@requires_heart
def test_shared_files_are_the_original_uci_files() -> None:
    for filename, md5 in FILES.values():
        assert file_md5(HEART / filename) == md5


@requires_heart
def test_split_sizes_match_flamby() -> None:
    data = load_heart_disease(directory=HEART)
    sizes = {site: (len(s.train), len(s.test)) for site, s in data.sites.items()}
    assert sizes == {
        "cleveland": (199, 104),
        "hungary": (172, 89),
        "switzerland": (30, 16),
        "va": (85, 45),
    }
    assert len(data.central_test) == 104 + 89 + 16 + 45


@requires_heart
def test_features_are_13_and_standardised_with_each_sites_training_statistics() -> None:
    data = load_heart_disease(directory=HEART)
    for splits in data.sites.values():
        assert splits.train.x.shape[1] == NUM_FEATURES == 13
        assert splits.train.x.dtype == np.float32
        varying = splits.train.x.std(axis=0) > 0
        np.testing.assert_allclose(splits.train.x.mean(axis=0), 0.0, atol=1e-5)
        np.testing.assert_allclose(splits.train.x.std(axis=0)[varying], 1.0, atol=1e-4)
        assert set(np.unique(splits.train.y)) <= {0, 1}


@requires_heart
def test_validation_split_is_carved_from_training_data_only() -> None:
    plain = load_heart_disease(directory=HEART)
    held = load_heart_disease(directory=HEART, val_fraction=0.2)
    for site in plain.sites:
        a, b = plain.sites[site], held.sites[site]
        assert len(b.train) + len(b.val) == len(a.train)
        assert len(b.test) == len(a.test)


def test_missing_folder_names_the_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such folder: .*nowhere"):
        load_heart_disease(directory=tmp_path / "nowhere")


def test_missing_hospital_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="processed.cleveland.data"):
        load_heart_disease(directory=tmp_path)


def test_line_with_the_wrong_number_of_fields_names_the_file_and_line(tmp_path: Path) -> None:
    for filename, _ in FILES.values():
        (tmp_path / filename).write_text("63,1,1,145,233,1,2,150,0,2.3,3,0,6,0\n1,2,3\n")
    with pytest.raises(DataError, match=r"processed.cleveland.data: line 2 has 3 fields"):
        load_heart_disease(directory=tmp_path)
