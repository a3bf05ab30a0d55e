"""Tests of the MedMNIST v2 ``.npz`` loader and the label check."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from flmi.core.errors import ConfigError, DataError, LabelError
from flmi.data.arrays import ArraySplit
from flmi.data.medmnist import check_labels, load_medmnist_npz

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
BREASTMNIST = SHARED_DATA / "medmnist" / "breastmnist.npz"

needs_breastmnist = pytest.mark.skipif(
    not BREASTMNIST.is_file(),
    reason=f"real BreastMNIST file not found at {BREASTMNIST} (shared data not mounted)",
)


def _arrays(
    *, image_shape: tuple[int, ...], sizes: tuple[int, int, int] = (6, 3, 4), seed: int = 0
) -> dict[str, np.ndarray]:
    """MedMNIST-shaped uint8 arrays: images of ``image_shape`` and (N, 1) labels in {0, 1}."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for split, n in zip(("train", "val", "test"), sizes, strict=True):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, *image_shape), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 2, (n, 1), dtype=np.uint8)
    return arrays


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` as an uncompressed npz archive, as ``np.savez`` does."""
    with zipfile.ZipFile(path, "w") as archive:
        for key, array in arrays.items():
            with archive.open(f"{key}.npy", "w") as member:
                np.lib.format.write_array(member, array, allow_pickle=False)
    return path


@needs_breastmnist
def test_real_breastmnist_loads_with_official_shapes_and_label_counts() -> None:
    # Act
    splits = load_medmnist_npz(path=BREASTMNIST)

    # Assert
    assert splits.train.x.shape == (546, 1, 28, 28)
    assert splits.val.x.shape == (78, 1, 28, 28)
    assert splits.test.x.shape == (156, 1, 28, 28)
    assert splits.train.x.dtype == np.float32
    assert splits.train.y.dtype == np.int64
    assert splits.train.label_counts() == {"0": 147, "1": 399}
    assert splits.val.label_counts() == {"0": 21, "1": 57}
    assert splits.test.label_counts() == {"0": 42, "1": 114}
    assert float(splits.train.x.min()) >= 0.0 and float(splits.train.x.max()) <= 1.0


def test_grey_images_become_float32_channels_first_scaled_by_255(tmp_path: Path) -> None:
    # Arrange
    arrays = _arrays(image_shape=(5, 7))
    path = _write_npz(tmp_path / "grey.npz", arrays)

    # Act
    splits = load_medmnist_npz(path=path)

    # Assert
    assert splits.train.x.shape == (6, 1, 5, 7)
    assert splits.train.x.flags.c_contiguous
    np.testing.assert_array_equal(
        splits.train.x[:, 0], arrays["train_images"].astype(np.float32) / np.float32(255)
    )
    np.testing.assert_array_equal(splits.test.y, arrays["test_labels"][:, 0].astype(np.int64))


def test_rgb_images_load_as_three_channels_first(tmp_path: Path) -> None:
    # Arrange
    arrays = _arrays(image_shape=(5, 7, 3))
    path = _write_npz(tmp_path / "rgb.npz", arrays)

    # Act
    splits = load_medmnist_npz(path=path)

    # Assert
    assert splits.val.x.shape == (3, 3, 5, 7)
    assert splits.val.x.flags.c_contiguous
    # Pixel (row 2, col 4) of image 1, green channel, is found at [1, 1, 2, 4].
    assert splits.val.x[1, 1, 2, 4] == np.float32(arrays["val_images"][1, 2, 4, 1]) / 255


def test_3d_volumes_load_as_one_channel_volumes(tmp_path: Path) -> None:
    # Arrange
    arrays = _arrays(image_shape=(4, 5, 6))
    path = _write_npz(tmp_path / "vol3d.npz", arrays)

    # Act
    splits = load_medmnist_npz(path=path)

    # Assert
    assert splits.train.x.shape == (6, 1, 4, 5, 6)
    assert splits.test.x.shape == (4, 1, 4, 5, 6)
    assert splits.train.y.shape == (6,)


def test_missing_file_error_names_the_path_and_the_fix(tmp_path: Path) -> None:
    # Arrange
    path = tmp_path / "nope.npz"

    # Act / Assert
    with pytest.raises(DataError, match=r"data\.path: no such file: .*nope\.npz.*\[data\] path"):
        load_medmnist_npz(path=path)


def test_file_of_random_bytes_is_a_data_error_naming_the_file(tmp_path: Path) -> None:
    # Arrange
    path = tmp_path / "random.npz"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())

    # Act / Assert
    with pytest.raises(DataError, match=r"random\.npz.*not a valid MedMNIST \.npz"):
        load_medmnist_npz(path=path)


@pytest.mark.parametrize("keep_fraction", [0.5, 0.9])
def test_truncated_npz_is_a_data_error_naming_the_file(
    tmp_path: Path, keep_fraction: float
) -> None:
    # Arrange
    a = _arrays(image_shape=(8, 8), sizes=(40, 10, 10))
    whole = tmp_path / "whole.npz"
    np.savez(
        whole,
        train_images=a["train_images"],
        train_labels=a["train_labels"],
        val_images=a["val_images"],
        val_labels=a["val_labels"],
        test_images=a["test_images"],
        test_labels=a["test_labels"],
    )
    assert load_medmnist_npz(path=whole).train.x.shape == (40, 1, 8, 8)  # intact before the cut
    data = whole.read_bytes()
    path = tmp_path / "cut.npz"
    path.write_bytes(data[: int(len(data) * keep_fraction)])

    # Act / Assert
    with pytest.raises(DataError, match=r"cut\.npz.*truncated"):
        load_medmnist_npz(path=path)


def test_member_damaged_inside_a_valid_zip_is_a_data_error(tmp_path: Path) -> None:
    # Arrange: a well-formed zip whose member is not a valid .npy array (fails on lazy read).
    path = tmp_path / "damaged.npz"
    arrays = _arrays(image_shape=(4, 4))
    _write_npz(path, arrays)
    with zipfile.ZipFile(path, "w") as archive:
        for key in arrays:
            archive.writestr(f"{key}.npy", b"\x93NUMPY garbage")

    # Act / Assert
    with pytest.raises(DataError, match=r"damaged\.npz"):
        load_medmnist_npz(path=path)


def test_missing_key_error_names_the_key_and_the_keys_present(tmp_path: Path) -> None:
    # Arrange
    arrays = _arrays(image_shape=(4, 4))
    del arrays["val_labels"]
    path = _write_npz(tmp_path / "nokey.npz", arrays)

    # Act / Assert
    with pytest.raises(DataError, match=r"missing array 'val_labels'.*present: test_images"):
        load_medmnist_npz(path=path)


def test_non_uint8_images_are_rejected_naming_the_key(tmp_path: Path) -> None:
    # Arrange
    arrays = _arrays(image_shape=(4, 4))
    arrays["train_images"] = arrays["train_images"].astype(np.float32)
    path = _write_npz(tmp_path / "float.npz", arrays)

    # Act / Assert
    with pytest.raises(DataError, match=r"'train_images' has dtype float32, expected uint8"):
        load_medmnist_npz(path=path)


def test_images_of_wrong_ndim_are_rejected(tmp_path: Path) -> None:
    # Arrange
    arrays = _arrays(image_shape=(4,))
    path = _write_npz(tmp_path / "flat.npz", arrays)

    # Act / Assert
    with pytest.raises(DataError, match=r"'train_images' has shape \(6, 4\)"):
        load_medmnist_npz(path=path)


def test_label_count_differing_from_image_count_is_rejected(tmp_path: Path) -> None:
    # Arrange
    arrays = _arrays(image_shape=(4, 4))
    arrays["test_labels"] = arrays["test_labels"][:-1]
    path = _write_npz(tmp_path / "short.npz", arrays)

    # Act / Assert
    with pytest.raises(DataError, match=r"4 images but 'test_labels' holds 3 labels"):
        load_medmnist_npz(path=path)


def test_multi_label_file_is_rejected_as_not_supported_by_classification(
    tmp_path: Path,
) -> None:
    # Arrange
    arrays = _arrays(image_shape=(4, 4))
    arrays["train_labels"] = np.zeros((6, 14), dtype=np.uint8)
    path = _write_npz(tmp_path / "chest.npz", arrays)

    # Act / Assert
    with pytest.raises(DataError, match=r"multi-label files are not supported by the `classif"):
        load_medmnist_npz(path=path)


def test_negative_labels_are_a_label_error(tmp_path: Path) -> None:
    # Arrange
    arrays = _arrays(image_shape=(4, 4))
    arrays["val_labels"] = np.array([[0], [-1], [1]], dtype=np.int8)
    path = _write_npz(tmp_path / "neg.npz", arrays)

    # Act / Assert
    with pytest.raises(LabelError, match=r"neg\.npz.*'val_labels'.*negative label -1"):
        load_medmnist_npz(path=path)


def test_labels_inside_the_classes_pass_the_check() -> None:
    # Arrange
    split = ArraySplit(x=np.zeros((3, 1, 2, 2), np.float32), y=np.array([0, 2, 1]))

    # Act / Assert: no error
    check_labels(split=split, num_classes=3, where="medmnist train split")


def test_label_above_the_classes_names_where_the_value_and_the_fix() -> None:
    # Arrange
    split = ArraySplit(x=np.zeros((3, 1, 2, 2), np.float32), y=np.array([0, 4, 1]))

    # Act / Assert
    with pytest.raises(LabelError) as caught:
        check_labels(split=split, num_classes=2, where="medmnist train split")
    message = str(caught.value)
    assert "medmnist train split" in message
    assert "label 4" in message
    assert "0..1" in message
    assert "set [task] num_classes to 5" in message


def test_negative_label_fails_the_check() -> None:
    # Arrange
    split = ArraySplit(x=np.zeros((2, 1, 2, 2), np.float32), y=np.array([0, -3]))

    # Act / Assert
    with pytest.raises(LabelError, match=r"medmnist val split: label -3 lies outside .* 0\.\.1"):
        check_labels(split=split, num_classes=2, where="medmnist val split")


def test_check_labels_rejects_num_classes_below_one() -> None:
    # Arrange
    split = ArraySplit(x=np.zeros((1, 1, 2, 2), np.float32), y=np.array([0]))

    # Act / Assert
    with pytest.raises(ConfigError, match=r"task\.num_classes"):
        check_labels(split=split, num_classes=0, where="medmnist train split")


@needs_breastmnist
def test_real_breastmnist_labels_fit_two_classes_but_not_one() -> None:
    # Arrange
    splits = load_medmnist_npz(path=BREASTMNIST)

    # Act / Assert
    check_labels(split=splits.train, num_classes=2, where="medmnist train split")
    with pytest.raises(LabelError, match=r"set \[task\] num_classes to 2"):
        check_labels(split=splits.train, num_classes=1, where="medmnist train split")


def test_single_npy_array_is_rejected_as_not_an_npz_archive(tmp_path: Path) -> None:
    # Arrange
    path = tmp_path / "images.npy"
    np.save(path, np.zeros((2, 4, 4), dtype=np.uint8))

    # Act / Assert
    with pytest.raises(DataError, match=r"images\.npy: holds a single \.npy array"):
        load_medmnist_npz(path=path)
