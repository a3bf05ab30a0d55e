"""DICOM files and series through MONAI: slope/intercept, windowing, spacing, orientation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flmi.config import TransformsConfig
from flmi.core.errors import DataError
from flmi.data.dicom import is_dicom, series_files
from flmi.data.readers import UnreadableCode, UnreadableImage, read_image
from flmi.data.transforms import ImagePipeline
from tests.conftest import SHARED_DATA
from tests.data.dicom_factory import write_series, write_slice

DICOM_DIR = SHARED_DATA / "dicom"
requires_dicom = pytest.mark.skipif(
    not (DICOM_DIR / "CT_small.dcm").is_file(),
    reason=f"real sample DICOM files not found in {DICOM_DIR} (the shared data folder is absent)",
)

# Stored values of a 3-slice, 4-row, 5-column CT series, and its rescale.
STORED = (np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5) * 25 - 600).astype(np.int16)
SLOPE, INTERCEPT = 2.0, -1024.0
HU = STORED.astype(np.float64) * SLOPE + INTERCEPT  # (slice, row, column)


def as_read(volume: np.ndarray) -> np.ndarray:
    """(slice, row, column) to MONAI's (column, row, slice) axis order."""
    return np.transpose(volume, (2, 1, 0))


def pipeline(**keys: object) -> ImagePipeline:
    return ImagePipeline(spec=TransformsConfig(**keys))  # type: ignore[arg-type]


@pytest.fixture
def series(tmp_path: Path) -> Path:
    return write_series(
        tmp_path / "series",
        stored=STORED,
        slope=SLOPE,
        intercept=INTERCEPT,
        slice_mm=2.5,
        pixel_mm=(0.5, 0.8),
    )


def test_series_folder_reads_as_a_volume_in_hounsfield_units_sorted_by_instance(
    series: Path,
) -> None:
    image, stray = read_image(series)

    assert stray == []
    assert tuple(image.shape) == (5, 4, 3)
    np.testing.assert_array_equal(np.asarray(image, dtype=np.float64), as_read(HU))


def test_series_spacing_comes_from_pixel_spacing_and_slice_positions(series: Path) -> None:
    image, _ = read_image(series)

    # Columns are 0.8 mm apart, rows 0.5 mm, slices 2.5 mm.
    np.testing.assert_allclose(np.asarray(image.pixdim), [0.8, 0.5, 2.5])


def test_ct_window_maps_center_and_width_to_0_1_exactly(series: Path) -> None:
    center, width = 40.0, 400.0
    image, _ = read_image(series)

    out = pipeline(intensity="window", window_center=center, window_width=width)(image, where="t")

    expected = np.clip((HU - (center - width / 2)) / width, 0.0, 1.0)
    assert out.shape == (1, 5, 4, 3)
    np.testing.assert_allclose(out[0], as_read(expected), rtol=0, atol=1e-6)
    # The series spans -1024-1200 .. above the window, so both clips are exercised.
    assert out.min() == 0.0 and out.max() == 1.0


def test_window_of_a_lung_setting_keeps_values_inside_it_linear(series: Path) -> None:
    image, _ = read_image(series)

    out = pipeline(intensity="window", window_center=-600.0, window_width=1500.0)(image, where="t")

    inside = (HU > -1350) & (HU < 150)
    expected = (HU - (-1350.0)) / 1500.0
    mask = as_read(inside)
    np.testing.assert_allclose(out[0][mask], as_read(expected)[mask], atol=1e-6)


def test_spacing_resamples_slices_to_the_target_thickness(series: Path) -> None:
    image, _ = read_image(series)

    out = pipeline(intensity="none", spacing=[0.8, 0.5, 5.0])(image, where="t")

    # 3 slices 2.5 mm apart span 5 mm: at 5 mm there are 2, the first and the last.
    assert out.shape == (1, 5, 4, 2)
    np.testing.assert_allclose(out[0][..., 0], as_read(HU)[..., 0], atol=1e-3)
    np.testing.assert_allclose(out[0][..., 1], as_read(HU)[..., 2], atol=1e-3)


def test_orientation_ras_flips_the_lps_row_and_column_axes(series: Path) -> None:
    image, _ = read_image(series)

    out = pipeline(intensity="none", orientation="RAS")(image, where="t")

    # DICOM's x grows to the patient's left and y to the back: RAS reverses both.
    np.testing.assert_allclose(out[0], as_read(HU)[::-1, ::-1, :], atol=0)


def test_orientation_lps_keeps_the_dicom_axes(series: Path) -> None:
    image, _ = read_image(series)

    out = pipeline(intensity="none", orientation="LPS")(image, where="t")

    np.testing.assert_allclose(out[0], as_read(HU), atol=0)


def test_stray_file_in_a_series_folder_is_left_out_and_reported(series: Path) -> None:
    (series / "notes.txt").write_text("not a slice")

    image, stray = read_image(series)

    assert [p.name for p in stray] == ["notes.txt"]
    np.testing.assert_array_equal(np.asarray(image, dtype=np.float64), as_read(HU))


def test_series_files_separates_dicom_slices_from_other_files(series: Path) -> None:
    (series / "readme.md").write_text("x")
    (series / ".DS_Store").write_bytes(b"\0" * 10)

    files = series_files(series)

    assert len(files.slices) == 3 and all(is_dicom(p) for p in files.slices)
    assert [p.name for p in files.other] == ["readme.md"]


def test_folder_holding_two_series_is_refused_as_mixed(series: Path) -> None:
    write_series(series, stored=STORED[:2], file_stem="other")  # a second series, same folder

    with pytest.raises(UnreadableImage) as caught:
        read_image(series)

    assert caught.value.code == UnreadableCode.MIXED_SERIES
    assert "own folder" in caught.value.detail


def test_folder_without_any_dicom_file_is_unreadable_not_dicom(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("x")

    with pytest.raises(UnreadableImage) as caught:
        read_image(tmp_path / "empty")

    assert caught.value.code == UnreadableCode.NOT_DICOM


def test_dcm_file_that_is_not_dicom_is_unreadable_not_dicom(tmp_path: Path) -> None:
    fake = tmp_path / "fake.dcm"
    fake.write_bytes(b"this is a text file, not DICOM" * 10)

    with pytest.raises(UnreadableImage) as caught:
        read_image(fake)

    assert caught.value.code == UnreadableCode.NOT_DICOM
    assert "fake.dcm" in caught.value.detail  # for the site log


def test_truncated_dicom_pixel_data_is_unreadable_corrupt(tmp_path: Path) -> None:
    good = write_slice(tmp_path / "good.dcm", stored=STORED[0])
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(good.read_bytes()[:-30])

    with pytest.raises(UnreadableImage) as caught:
        read_image(broken)

    assert caught.value.code == UnreadableCode.CORRUPT


def test_missing_file_is_unreadable_missing(tmp_path: Path) -> None:
    with pytest.raises(UnreadableImage) as caught:
        read_image(tmp_path / "nothing.dcm")

    assert caught.value.code == UnreadableCode.MISSING


def test_single_slice_becomes_a_one_slice_volume_in_a_3d_pipeline(tmp_path: Path) -> None:
    path = write_slice(tmp_path / "one.dcm", stored=STORED[1], slope=SLOPE, intercept=INTERCEPT)
    image, _ = read_image(path)

    out = pipeline(intensity="none", spatial_size=[5, 4, 1])(image, where="t")

    assert out.shape == (1, 5, 4, 1)
    np.testing.assert_allclose(out[0, ..., 0], HU[1].T, atol=1e-4)


def test_sagittal_slice_as_a_volume_gets_its_normal_as_slice_axis_and_can_be_oriented(
    tmp_path: Path,
) -> None:
    # Rows run anterior-posterior (+y in LPS), columns foot-ward (-z): a sagittal plane.
    sagittal = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
    path = write_slice(tmp_path / "sag.dcm", stored=STORED[0], orientation=sagittal)
    image, _ = read_image(path)

    out = pipeline(intensity="none", spatial_size=[1, 5, 4], orientation="RAS")

    volume = out(image, where="t")
    # In RAS the one-slice axis is left-right, so it comes first; the resize keeps every value.
    assert volume.shape == (1, 1, 5, 4)
    assert sorted(volume.ravel().tolist()) == sorted((STORED[0].astype(float)).ravel().tolist())


def test_volume_in_a_2d_pipeline_is_refused_with_the_setting_to_change(series: Path) -> None:
    image, _ = read_image(series)

    with pytest.raises(DataError, match="3 values for volumes"):
        pipeline(spatial_size=[8, 8])(image, where="row 2")


@requires_dicom
def test_real_ct_sample_is_rescaled_to_hounsfield_units() -> None:
    image, _ = read_image(DICOM_DIR / "CT_small.dcm")

    # Stored values 128..2191 with intercept -1024 (pydicom's description of the file).
    assert tuple(image.shape) == (128, 128)
    assert float(image.min()) == 128 - 1024
    assert float(image.max()) == 2191 - 1024


@requires_dicom
def test_real_mr_samples_read_and_resize_to_a_common_size() -> None:
    shapes = []
    for name in ("MR_small.dcm", "MR2_UNCR.dcm"):
        image, _ = read_image(DICOM_DIR / name)
        out = pipeline(spatial_size=[16, 16])(image, where=name)
        shapes.append(out.shape)
        assert 0.0 <= out.min() < out.max() <= 1.0

    assert shapes == [(1, 16, 16), (1, 16, 16)]
