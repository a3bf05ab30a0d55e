"""Generated lesion-segmentation hospitals: shapes, determinism, site shift, labels, errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from flmi.core.errors import ConfigError
from flmi.data.arrays import ArraySplit, FederatedData
from flmi.data.synthetic_lesions import (
    generate_lesion_hospitals,
    lesion_classes_present,
    lesion_present,
    make_lesion_hospitals,
    relabel,
)


def _data(
    *, seed: int = 0, dims: int = 2, size: int = 24, n: int = 200, classes: int = 1
) -> FederatedData:
    hospitals = make_lesion_hospitals(num_sites=4, seed=seed, n_patients_total=n, image_size=size)
    return generate_lesion_hospitals(
        hospitals=hospitals, seed=seed, image_size=size, spatial_dims=dims, lesion_classes=classes
    )


def _all(data: FederatedData) -> tuple[np.ndarray, np.ndarray]:
    splits = [s for site in data.sites.values() for s in (site.train, site.val, site.test)]
    return np.concatenate([s.x for s in splits]), np.concatenate([s.y for s in splits])


@pytest.mark.parametrize("dims", [2, 3])
def test_images_and_masks_have_matching_shapes_dtypes_and_ranges(dims: int) -> None:
    data = _data(dims=dims, size=16, classes=2)
    for site in data.sites.values():
        for split in (site.train, site.val, site.test):
            assert split.x.shape[1:] == (1,) + (16,) * dims
            assert split.y.shape[1:] == (16,) * dims
            assert split.x.dtype == np.float32 and split.y.dtype == np.int64
            assert split.x.min() >= 0.0 and split.x.max() <= 1.0
            assert set(np.unique(split.y).tolist()) <= {0, 1, 2}


def test_same_seed_gives_identical_data_and_another_seed_does_not() -> None:
    first, again, other = _data(seed=3), _data(seed=3), _data(seed=4)
    for name in first.sites:
        np.testing.assert_array_equal(first.sites[name].train.x, again.sites[name].train.x)
        np.testing.assert_array_equal(first.sites[name].train.y, again.sites[name].train.y)
    assert not np.array_equal(first.central_test.x[:5], other.central_test.x[:5])


def test_each_hospital_has_its_own_prevalence_and_lesion_size() -> None:
    hospitals = make_lesion_hospitals(num_sites=4, seed=0, n_patients_total=400, image_size=32)
    data = generate_lesion_hospitals(hospitals=hospitals, seed=0, image_size=32, spatial_dims=2)
    sizes, prevalences = [], []
    for h in hospitals:
        site = data.sites[h.name]
        masks = np.concatenate([site.train.y, site.val.y, site.test.y])
        present = lesion_present(masks)
        prevalences.append(present.mean())
        assert abs(present.mean() - h.scanner.prevalence) < 0.05
        # Area of a single lesion scales with the hospital's lesion radius squared.
        area = (masks > 0).reshape(len(masks), -1).sum(axis=1)[present == 1]
        sizes.append(float(np.median(area)))
    radii = [h.lesion_radius_px for h in hospitals]
    assert len(set(radii)) == 4
    assert np.corrcoef(radii, sizes)[0, 1] > 0.8
    assert max(prevalences) - min(prevalences) > 0.1


def test_hospitals_differ_in_scanner_appearance_of_healthy_tissue() -> None:
    data = _data(n=240)
    means = []
    for site in data.sites.values():
        healthy = site.train.x[lesion_present(site.train.y) == 0]
        means.append(float(healthy.mean()))
    assert max(means) - min(means) > 0.05


def test_lesion_classes_differ_in_brightness_and_masks_mark_them() -> None:
    x, y = _all(_data(n=240, classes=2))
    image = x[:, 0]
    tissue = image[y == 0].mean()
    assert image[y == 1].mean() > tissue + 0.1  # class 1: brighter
    assert image[y == 2].mean() < tissue - 0.1  # class 2: darker


def test_some_patients_have_several_lesions_and_some_none() -> None:
    _, y = _all(_data(n=240, classes=3))
    classes_per_case = lesion_classes_present(y, lesion_classes=3).sum(axis=1)
    assert (classes_per_case == 0).any()
    assert (classes_per_case >= 2).any()


def test_central_test_is_the_sites_test_splits_in_sorted_order() -> None:
    data = _data()
    expected = np.concatenate([data.sites[n].test.y for n in sorted(data.sites)])
    np.testing.assert_array_equal(data.central_test.y, expected)


def test_relabel_gives_lesion_present_or_one_label_per_lesion_class() -> None:
    data = _data(classes=2)
    present = relabel(data, labels="present", lesion_classes=2)
    classes = relabel(data, labels="classes", lesion_classes=2)
    masks = data.central_test.y
    flat = masks.reshape(len(masks), -1)
    np.testing.assert_array_equal(present.central_test.y, (flat > 0).any(axis=1))
    np.testing.assert_array_equal(classes.central_test.y[:, 0], (flat == 1).any(axis=1))
    np.testing.assert_array_equal(classes.central_test.y[:, 1], (flat == 2).any(axis=1))
    np.testing.assert_array_equal(present.central_test.x, data.central_test.x)


def test_label_counts_count_cases_per_mask_class_and_positives_per_label() -> None:
    masks = np.zeros((3, 4, 4), dtype=np.int64)
    masks[0, 1, 1] = 1
    masks[1, 2, 2] = 2
    masks[1, 0, 0] = 1
    split = ArraySplit(x=np.zeros((3, 1, 4, 4), np.float32), y=masks)
    assert split.label_counts() == {"0": 3, "1": 2, "2": 1}
    multi = ArraySplit(x=np.zeros((3, 2), np.float32), y=np.array([[1, 0], [1, 1], [0, 0]]))
    assert multi.label_counts() == {"0": 2, "1": 1}


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"spatial_dims": 4}, "spatial_dims"),
        ({"image_size": 8}, "image_size"),
        ({"lesion_classes": 0}, "lesion_classes"),
        ({"lesion_classes": 9}, "lesion_classes"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "training split"),
    ],
)
def test_unusable_arguments_are_refused_with_the_name_of_the_setting(
    change: dict[str, int | float], match: str
) -> None:
    hospitals = make_lesion_hospitals(num_sites=2, seed=0, n_patients_total=100, image_size=16)
    args: dict[str, object] = {
        "hospitals": hospitals,
        "seed": 0,
        "image_size": 16,
        "spatial_dims": 2,
        "lesion_classes": 1,
    }
    args.update(change)
    with pytest.raises(ConfigError, match=match):
        generate_lesion_hospitals(**args)  # type: ignore[arg-type]


def test_duplicate_hospital_names_are_refused() -> None:
    first, second = make_lesion_hospitals(num_sites=2, seed=0, n_patients_total=100, image_size=16)
    twin = dataclasses.replace(second, scanner=dataclasses.replace(second.scanner, name=first.name))
    with pytest.raises(ConfigError, match="duplicate"):
        generate_lesion_hospitals(hospitals=[first, twin], seed=0, image_size=16, spatial_dims=2)
