"""Generated "age from a scan" hospitals: deterministic, learnable, shifted between sites."""

from __future__ import annotations

import numpy as np
import pytest

from flmi.core.errors import ConfigError
from flmi.data.synthetic import make_profiles
from flmi.data.synthetic_age import AGE_RANGE, generate_age_hospitals


def _data(seed: int = 0):  # type: ignore[no-untyped-def]
    return generate_age_hospitals(
        profiles=make_profiles(num_sites=4, seed=seed, n_patients_total=400),
        seed=seed,
        image_size=16,
    )


def test_same_seed_same_images_and_ages() -> None:
    a, b = _data(0), _data(0)
    np.testing.assert_array_equal(a.central_test.x, b.central_test.x)
    np.testing.assert_array_equal(a.central_test.y, b.central_test.y)


def test_ages_are_float_years_in_range_and_images_in_unit_range() -> None:
    data = _data()
    for splits in data.sites.values():
        for split in (splits.train, splits.val, splits.test):
            assert split.y.dtype == np.float32 and split.y.ndim == 1
            assert AGE_RANGE[0] <= split.y.min() and split.y.max() <= AGE_RANGE[1]
            assert split.x.shape[1:] == (1, 16, 16) and split.x.min() >= 0 and split.x.max() <= 1


def test_hospitals_differ_in_mean_age() -> None:
    means = [float(s.train.y.mean()) for s in _data().sites.values()]
    assert max(means) - min(means) > 15


def test_older_patients_have_a_darker_centre_within_a_hospital() -> None:
    train = _data().sites["hospital_1"].train
    centre = train.x[:, 0, 6:10, 6:10].mean(axis=(1, 2))

    assert np.corrcoef(train.y, centre)[0, 1] < -0.4


def test_too_small_images_are_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"data\.image_size must be at least 16"):
        generate_age_hospitals(
            profiles=make_profiles(num_sites=2, seed=0, n_patients_total=100), seed=0, image_size=12
        )
