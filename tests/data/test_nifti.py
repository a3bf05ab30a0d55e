"""NIfTI volumes through MONAI: resampling to a target spacing, intensity normalisation."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from flmi.config import TransformsConfig
from flmi.data.readers import read_image
from flmi.data.transforms import ImagePipeline
from tests.conftest import SHARED_DATA

NIFTI_DIR = SHARED_DATA / "nifti"
requires_nifti = pytest.mark.skipif(
    not (NIFTI_DIR / "anatomical.nii").is_file(),
    reason=f"real sample NIfTI files not found in {NIFTI_DIR} (the shared data folder is absent)",
)


def pipeline(**keys: object) -> ImagePipeline:
    return ImagePipeline(spec=TransformsConfig(**keys))  # type: ignore[arg-type]


def write_nifti(path: Path, volume: np.ndarray, spacing_mm: tuple[float, float, float]) -> Path:
    affine = np.diag([*spacing_mm, 1.0])
    nib.save(nib.Nifti1Image(volume, affine), str(path))
    return path


@pytest.fixture
def ramp(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A 4 x 5 x 6 volume, 1 x 1 x 2 mm, whose value grows linearly along every axis."""
    i, j, k = np.meshgrid(np.arange(4), np.arange(5), np.arange(6), indexing="ij")
    volume = (10.0 * i + 3.0 * j + 1.0 * k).astype(np.float32)
    return write_nifti(tmp_path / "ramp.nii.gz", volume, (1.0, 1.0, 2.0)), volume


def test_generated_volume_reads_unchanged_with_its_spacing(ramp: tuple[Path, np.ndarray]) -> None:
    path, volume = ramp

    image, _ = read_image(path)

    np.testing.assert_array_equal(np.asarray(image), volume)
    np.testing.assert_allclose(np.asarray(image.pixdim), [1.0, 1.0, 2.0])


def test_resampling_to_1mm_interpolates_new_slices_linearly(
    ramp: tuple[Path, np.ndarray],
) -> None:
    path, volume = ramp
    image, _ = read_image(path)

    out = pipeline(intensity="none", spacing=[1.0, 1.0, 1.0])(image, where="t")

    # 6 slices 2 mm apart span 10 mm: 11 slices at 1 mm; a linear ramp stays a ramp.
    assert out.shape == (1, 4, 5, 11)
    np.testing.assert_allclose(out[0][..., ::2], volume, atol=1e-4)
    midway = (volume[..., :-1] + volume[..., 1:]) / 2
    np.testing.assert_allclose(out[0][..., 1::2], midway, atol=1e-4)


def test_zscore_normalisation_gives_mean_0_and_std_1(ramp: tuple[Path, np.ndarray]) -> None:
    path, volume = ramp
    image, _ = read_image(path)

    out = pipeline(intensity="zscore")(image, where="t")

    np.testing.assert_allclose(out[0], (volume - volume.mean()) / volume.std(), atol=1e-5)


def test_minmax_scaling_maps_the_volume_to_0_1(ramp: tuple[Path, np.ndarray]) -> None:
    path, volume = ramp
    image, _ = read_image(path)

    out = pipeline(intensity="minmax")(image, where="t")

    np.testing.assert_allclose(out[0], (volume - volume.min()) / np.ptp(volume), atol=1e-6)


@requires_nifti
def test_real_anatomical_volume_resamples_from_2mm_to_4mm() -> None:
    image, _ = read_image(NIFTI_DIR / "anatomical.nii")  # big-endian, 33 x 41 x 25 at 2 mm

    out = pipeline(spacing=[4.0, 4.0, 4.0], orientation="RAS")(image, where="anatomical")

    assert out.shape == (1, 17, 21, 13)
    assert out.dtype == np.float32
    assert out.min() == 0.0 and out.max() == pytest.approx(1.0)


@requires_nifti
@pytest.mark.parametrize("name", ["example4d.nii.gz", "example_nifti2.nii.gz", "functional.nii"])
def test_real_4d_series_average_their_frames_into_one_channel(name: str) -> None:
    image, _ = read_image(NIFTI_DIR / name)
    frames = np.moveaxis(np.asarray(image, dtype=np.float64), -1, 0)

    out = pipeline(intensity="none", channels=1)(image, where=name)

    assert out.shape == (1, *frames.shape[1:])
    np.testing.assert_allclose(out[0], frames.mean(axis=0), rtol=1e-5)


@requires_nifti
def test_nifti2_crop_equals_the_matching_part_of_its_nifti1_original() -> None:
    # The shared README: example_nifti2 is example4d cropped at offset (48, 38, 6).
    whole, _ = read_image(NIFTI_DIR / "example4d.nii.gz")
    crop, _ = read_image(NIFTI_DIR / "example_nifti2.nii.gz")

    np.testing.assert_array_equal(
        np.asarray(crop), np.asarray(whole)[48 : 48 + 32, 38 : 38 + 20, 6 : 6 + 12]
    )
