"""Tests of the generated multi-hospital lesion data."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from flmi.core.errors import ConfigError
from flmi.data.arrays import FederatedData
from flmi.data.synthetic import HospitalProfile, generate_hospitals, make_profiles

SIZE = 16  # small images keep the tests fast


def _small_federation(*, seed: int = 0, num_sites: int = 4) -> FederatedData:
    profiles = make_profiles(num_sites=num_sites, seed=seed, n_patients_total=400)
    return generate_hospitals(profiles=profiles, seed=seed, image_size=SIZE)


def test_make_profiles_names_hospitals_1_to_n_and_sums_to_the_total() -> None:
    # Act
    profiles = make_profiles(num_sites=5, seed=0, n_patients_total=1000)

    # Assert
    assert [p.name for p in profiles] == [f"hospital_{i}" for i in range(1, 6)]
    assert sum(p.n_patients for p in profiles) == 1000


def test_make_profiles_gives_unequal_sizes_largest_about_four_times_smallest() -> None:
    # Act
    sizes = [p.n_patients for p in make_profiles(num_sites=4, seed=0)]

    # Assert
    assert len(set(sizes)) == 4
    assert 3.5 <= max(sizes) / min(sizes) <= 4.5


def test_make_profiles_gives_each_hospital_its_own_prevalence_and_scanner() -> None:
    # Act
    profiles = make_profiles(num_sites=8, seed=3)

    # Assert
    for field in (
        "prevalence",
        "intensity_scale",
        "intensity_offset",
        "gamma",
        "noise_std",
        "blur_sigma",
        "bias_field",
    ):
        values = [getattr(p, field) for p in profiles]
        assert len(set(values)) == len(values), field
    assert all(0.2 <= p.prevalence <= 0.6 for p in profiles)


def test_make_profiles_is_deterministic_by_seed() -> None:
    # Act
    first = make_profiles(num_sites=4, seed=7)
    again = make_profiles(num_sites=4, seed=7)
    other = make_profiles(num_sites=4, seed=8)

    # Assert
    assert first == again
    assert first != other


@pytest.mark.parametrize("num_sites", [1, 17])
def test_make_profiles_rejects_site_counts_outside_2_to_16(num_sites: int) -> None:
    with pytest.raises(ConfigError, match=r"num_sites: must be 2\.\.16"):
        make_profiles(num_sites=num_sites, seed=0)


def test_make_profiles_rejects_too_few_patients_and_says_how_many_are_needed() -> None:
    with pytest.raises(ConfigError, match=r"raise n_patients_total to at least \d+"):
        make_profiles(num_sites=16, seed=0, n_patients_total=100)


def test_same_seed_gives_identical_arrays() -> None:
    # Act
    first = _small_federation(seed=5)
    again = _small_federation(seed=5)

    # Assert
    assert list(first.sites) == list(again.sites)
    for name in first.sites:
        for split in ("train", "val", "test"):
            a = getattr(first.sites[name], split)
            b = getattr(again.sites[name], split)
            np.testing.assert_array_equal(a.x, b.x)
            np.testing.assert_array_equal(a.y, b.y)


def test_different_seed_gives_different_images() -> None:
    # Arrange
    profiles = make_profiles(num_sites=2, seed=0, n_patients_total=100)

    # Act
    first = generate_hospitals(profiles=profiles, seed=0, image_size=SIZE)
    other = generate_hospitals(profiles=profiles, seed=1, image_size=SIZE)

    # Assert
    assert not np.array_equal(first.sites["hospital_1"].train.x, other.sites["hospital_1"].train.x)


def test_images_are_float32_one_channel_in_unit_range_and_labels_int64_binary() -> None:
    # Act
    data = _small_federation()

    # Assert
    for splits in data.sites.values():
        for split in (splits.train, splits.val, splits.test):
            assert split.x.dtype == np.float32
            assert split.x.shape[1:] == (1, SIZE, SIZE)
            assert float(split.x.min()) >= 0.0 and float(split.x.max()) <= 1.0
            assert split.y.dtype == np.int64
            assert set(np.unique(split.y).tolist()) <= {0, 1}


def test_split_sizes_add_up_to_each_hospitals_patients_and_follow_the_fractions() -> None:
    # Arrange
    profiles = make_profiles(num_sites=3, seed=0, n_patients_total=600)

    # Act
    data = generate_hospitals(
        profiles=profiles, seed=0, image_size=SIZE, val_fraction=0.1, test_fraction=0.2
    )

    # Assert
    for profile in profiles:
        splits = data.sites[profile.name]
        n_train, n_val, n_test = len(splits.train), len(splits.val), len(splits.test)
        assert n_train + n_val + n_test == profile.n_patients
        assert abs(n_test - 0.2 * profile.n_patients) <= 2
        assert abs(n_val - 0.1 * profile.n_patients) <= 2


def test_every_split_of_every_hospital_holds_both_classes() -> None:
    # Act
    data = _small_federation()

    # Assert
    for splits in data.sites.values():
        for split in (splits.train, splits.val, splits.test):
            assert set(split.label_counts()) == {"0", "1"}


def test_hospital_prevalence_follows_its_profile() -> None:
    # Arrange
    profiles = make_profiles(num_sites=4, seed=2, n_patients_total=800)

    # Act
    data = generate_hospitals(profiles=profiles, seed=2, image_size=SIZE)

    # Assert
    for profile in profiles:
        splits = data.sites[profile.name]
        y = np.concatenate([splits.train.y, splits.val.y, splits.test.y])
        assert int(y.sum()) == round(profile.n_patients * profile.prevalence)


def test_central_test_is_the_concatenation_of_site_tests_in_sorted_order() -> None:
    # Act
    data = _small_federation()

    # Assert
    names = sorted(data.sites)
    np.testing.assert_array_equal(
        data.central_test.x, np.concatenate([data.sites[n].test.x for n in names])
    )
    np.testing.assert_array_equal(
        data.central_test.y, np.concatenate([data.sites[n].test.y for n in names])
    )


def test_hospitals_differ_in_intensity_statistics_scanner_shift_is_real() -> None:
    # Act
    data = _small_federation(num_sites=4)

    # Assert: negatives only, so prevalence cannot explain the difference
    means = []
    stds = []
    for splits in data.sites.values():
        negatives = splits.train.x[splits.train.y == 0]
        means.append(float(negatives.mean()))
        stds.append(float(negatives.std()))
    assert max(means) - min(means) > 0.05
    assert max(stds) / min(stds) > 1.2


def test_positives_are_brighter_than_negatives_on_average() -> None:
    # Arrange: one scanner for both classes
    profile = HospitalProfile(
        name="hospital_1",
        n_patients=400,
        prevalence=0.5,
        intensity_scale=1.0,
        intensity_offset=0.0,
        gamma=1.0,
        noise_std=0.02,
        blur_sigma=0.5,
        bias_field=0.1,
    )

    # Act
    split = generate_hospitals(profiles=[profile], seed=0, image_size=SIZE).sites["hospital_1"]

    # Assert: the brightest pixel of an image rises with a lesion
    peak = split.train.x.reshape(len(split.train), -1).max(axis=1)
    assert peak[split.train.y == 1].mean() > peak[split.train.y == 0].mean() + 0.05


def test_generate_hospitals_rejects_duplicate_names() -> None:
    # Arrange
    profile = make_profiles(num_sites=2, seed=0, n_patients_total=100)[0]

    # Act / Assert
    with pytest.raises(ConfigError, match=r"duplicate hospital names \['hospital_1'\]"):
        generate_hospitals(profiles=[profile, profile], seed=0)


def test_generate_hospitals_rejects_prevalence_outside_zero_one() -> None:
    # Arrange
    profile = dataclasses.replace(
        make_profiles(num_sites=2, seed=0, n_patients_total=100)[0], prevalence=1.0
    )

    # Act / Assert
    with pytest.raises(ConfigError, match=r"'hospital_1': prevalence = 1\.0"):
        generate_hospitals(profiles=[profile], seed=0)


def test_generate_hospitals_rejects_fractions_that_leave_no_training_split() -> None:
    # Arrange
    profiles = make_profiles(num_sites=2, seed=0, n_patients_total=100)

    # Act / Assert
    with pytest.raises(ConfigError, match=r"val_fraction = 0\.5, test_fraction = 0\.5"):
        generate_hospitals(profiles=profiles, seed=0, val_fraction=0.5, test_fraction=0.5)
