"""Tests of the IID and Dirichlet label-skew partitioners."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flmi.core.errors import ConfigError, PartitionError
from flmi.data.arrays import ArraySplit, FederatedData, SiteSplits
from flmi.data.medmnist import load_medmnist_npz
from flmi.data.partition import (
    check_min_examples,
    partition,
    partition_indices,
    site_label_summary,
)

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
BREASTMNIST = SHARED_DATA / "medmnist" / "breastmnist.npz"

needs_breastmnist = pytest.mark.skipif(
    not BREASTMNIST.is_file(),
    reason=f"real BreastMNIST file not found at {BREASTMNIST} (shared data not mounted)",
)


def _split(*, n: int, num_classes: int = 2, seed: int = 0) -> ArraySplit:
    """A split whose image value is the example's index, so examples can be traced."""
    y = np.random.default_rng(seed).integers(0, num_classes, n).astype(np.int64)
    x = np.arange(n, dtype=np.float32).reshape(n, 1, 1, 1)
    return ArraySplit(x=x, y=y)


def _splits(
    *, sizes: tuple[int, int, int] = (600, 100, 200), num_classes: int = 2
) -> dict[str, ArraySplit]:
    return {
        name: _split(n=n, num_classes=num_classes, seed=i)
        for i, (name, n) in enumerate(zip(("train", "val", "test"), sizes, strict=True))
    }


def _run(
    splits: dict[str, ArraySplit],
    *,
    method: str,
    num_sites: int,
    seed: int,
    alpha: float = 0.5,
    min_examples_per_site: int = 1,
) -> FederatedData:
    return partition(
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        method=method,
        num_sites=num_sites,
        seed=seed,
        alpha=alpha,
        min_examples_per_site=min_examples_per_site,
    )


def _ids(split: ArraySplit) -> np.ndarray:
    return split.x.reshape(-1).astype(np.int64)


def _assert_disjoint_cover(data: FederatedData, splits: dict[str, ArraySplit]) -> None:
    for name, whole in splits.items():
        ids = np.concatenate([_ids(getattr(s, name)) for s in data.sites.values()])
        np.testing.assert_array_equal(np.sort(ids), np.arange(len(whole)))
        for site in data.sites.values():
            part = getattr(site, name)
            np.testing.assert_array_equal(part.y, whole.y[_ids(part)])


def _site_fraction_of_class_one(data: FederatedData) -> np.ndarray:
    return np.array([float(s.train.y.mean()) for s in data.sites.values()])


@pytest.mark.parametrize("method", ["iid", "dirichlet"])
def test_every_example_goes_to_exactly_one_site_in_every_split(method: str) -> None:
    # Arrange
    splits = _splits()

    # Act
    data = _run(splits, method=method, num_sites=4, seed=0, alpha=1.0)

    # Assert
    _assert_disjoint_cover(data, splits)


def test_sites_are_named_site_1_to_n_and_central_test_is_the_whole_test_split() -> None:
    # Arrange
    splits = _splits()

    # Act
    data = _run(splits, method="dirichlet", num_sites=3, seed=0, alpha=1.0)

    # Assert
    assert list(data.sites) == ["site_1", "site_2", "site_3"]
    assert data.central_test is splits["test"]


def test_iid_site_sizes_differ_by_at_most_one() -> None:
    # Arrange
    splits = _splits(sizes=(603, 101, 202))

    # Act
    data = _run(splits, method="iid", num_sites=4, seed=0)

    # Assert
    for name in ("train", "val", "test"):
        sizes = [len(getattr(s, name)) for s in data.sites.values()]
        assert max(sizes) - min(sizes) <= 1


def test_within_each_site_examples_keep_their_original_order() -> None:
    # Arrange
    splits = _splits()

    # Act
    data = _run(splits, method="dirichlet", num_sites=4, seed=0, alpha=0.5)

    # Assert
    for site in data.sites.values():
        ids = _ids(site.train)
        assert np.all(np.diff(ids) > 0)


def test_dirichlet_small_alpha_skews_labels_and_large_alpha_keeps_them_near_uniform() -> None:
    # Arrange
    splits = _splits(sizes=(4000, 400, 400))

    # Act
    skewed = _run(splits, method="dirichlet", num_sites=4, seed=0, alpha=0.1)
    uniform = _run(splits, method="dirichlet", num_sites=4, seed=0, alpha=1000.0)

    # Assert: the fraction of class 1 ranges widely over sites only with small alpha
    skewed_fraction = _site_fraction_of_class_one(skewed)
    uniform_fraction = _site_fraction_of_class_one(uniform)
    assert np.ptp(skewed_fraction) > 0.3
    assert np.ptp(uniform_fraction) < 0.1


def test_dirichlet_val_and_test_follow_each_sites_own_label_distribution() -> None:
    # Arrange
    splits = _splits(sizes=(4000, 2000, 2000))

    # Act
    data = _run(splits, method="dirichlet", num_sites=4, seed=1, alpha=0.3)

    # Assert: the same class shares apply to every split
    for site in data.sites.values():
        train_share = len(site.train) / 4000
        assert abs(len(site.val) / 2000 - train_share) < 0.02
        assert abs(len(site.test) / 2000 - train_share) < 0.02
        assert abs(float(site.test.y.mean()) - float(site.train.y.mean())) < 0.1


def test_same_seed_gives_the_same_partition_and_another_seed_a_different_one() -> None:
    # Arrange
    splits = _splits()

    # Act
    first = _run(splits, method="dirichlet", num_sites=4, seed=3)
    again = _run(splits, method="dirichlet", num_sites=4, seed=3)
    other = _run(splits, method="dirichlet", num_sites=4, seed=4)

    # Assert
    for name in first.sites:
        np.testing.assert_array_equal(_ids(first.sites[name].train), _ids(again.sites[name].train))
    assert any(
        not np.array_equal(_ids(first.sites[n].train), _ids(other.sites[n].train))
        for n in first.sites
    )


def test_iid_different_seed_gives_a_different_partition() -> None:
    # Arrange
    splits = _splits()

    # Act
    first = _run(splits, method="iid", num_sites=3, seed=0)
    other = _run(splits, method="iid", num_sites=3, seed=1)

    # Assert
    assert not np.array_equal(_ids(first.sites["site_1"].train), _ids(other.sites["site_1"].train))


def test_unknown_method_is_a_config_error_naming_the_field_and_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"partition\.method: unknown method 'pathology'.*iid"):
        _run(_splits(), method="pathology", num_sites=2, seed=0)


@pytest.mark.parametrize("alpha", [0.0, -1.0, float("nan")])
def test_non_positive_alpha_is_a_config_error_naming_partition_alpha(alpha: float) -> None:
    with pytest.raises(ConfigError, match=r"partition\.alpha"):
        _run(_splits(), method="dirichlet", num_sites=2, seed=0, alpha=alpha)


def test_zero_sites_is_a_config_error_naming_partition_num_sites() -> None:
    with pytest.raises(ConfigError, match=r"partition\.num_sites"):
        _run(_splits(), method="iid", num_sites=0, seed=0)


def test_too_few_training_examples_error_names_the_site_its_count_and_the_setting() -> None:
    # Arrange
    splits = _splits(sizes=(40, 20, 20))

    # Act / Assert: 40 examples over 4 sites leaves 10 each
    with pytest.raises(PartitionError) as caught:
        _run(splits, method="iid", num_sites=4, seed=0, min_examples_per_site=20)
    message = str(caught.value)
    assert "site 'site_1' has 10 training examples" in message
    assert "min_examples_per_site = 20" in message
    assert "raise partition.alpha" in message


def test_empty_validation_split_error_names_the_site_and_the_split() -> None:
    # Arrange: 3 validation examples cannot fill 4 sites
    splits = _splits(sizes=(40, 3, 20))

    # Act / Assert
    with pytest.raises(PartitionError, match=r"site 'site_4' has an empty val split"):
        _run(splits, method="iid", num_sites=4, seed=0)


def test_check_min_examples_reports_an_empty_test_split() -> None:
    # Arrange
    full = _split(n=10)
    empty = full.take(np.arange(0))
    data = FederatedData(
        sites={"site_1": SiteSplits(train=full, val=full, test=empty)}, central_test=full
    )

    # Act / Assert
    with pytest.raises(PartitionError, match=r"site 'site_1' has an empty test split"):
        check_min_examples(data=data, min_examples_per_site=1)


def test_site_label_summary_counts_sizes_and_labels_per_split() -> None:
    # Arrange
    split = ArraySplit(x=np.zeros((5, 1, 1, 1), np.float32), y=np.array([0, 1, 1, 0, 1]))
    one = split.take(np.array([0]))
    data = FederatedData(
        sites={"site_1": SiteSplits(train=split, val=one, test=one)}, central_test=one
    )

    # Act
    summary = site_label_summary(data=data)

    # Assert
    assert summary == {
        "site_1": {
            "n_train": 5,
            "n_val": 1,
            "n_test": 1,
            "label_counts": {
                "train": {"0": 2, "1": 3},
                "val": {"0": 1},
                "test": {"0": 1},
            },
        }
    }


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=120), min_size=1, max_size=3),
    num_classes=st.integers(min_value=1, max_value=5),
    num_sites=st.integers(min_value=1, max_value=8),
    alpha=st.floats(min_value=0.01, max_value=1000.0),
    method=st.sampled_from(["iid", "dirichlet"]),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_partition_indices_are_a_disjoint_cover_of_every_split(
    sizes: list[int], num_classes: int, num_sites: int, alpha: float, method: str, seed: int
) -> None:
    # Arrange
    rng = np.random.default_rng(seed)
    labels = [rng.integers(0, num_classes, n).astype(np.int64) for n in sizes]

    # Act
    result = partition_indices(
        labels=labels, method=method, num_sites=num_sites, seed=seed, alpha=alpha
    )

    # Assert
    assert len(result) == len(labels)
    for y, per_site in zip(labels, result, strict=True):
        assert len(per_site) == num_sites
        joined = np.concatenate(per_site)
        np.testing.assert_array_equal(np.sort(joined), np.arange(y.shape[0]))
        for part in per_site:
            assert part.dtype == np.int64
            assert np.all(np.diff(part) > 0)


@settings(max_examples=40, deadline=None)
@given(
    n_train=st.integers(min_value=0, max_value=200),
    n_val=st.integers(min_value=0, max_value=50),
    n_test=st.integers(min_value=0, max_value=50),
    num_sites=st.integers(min_value=1, max_value=6),
    alpha=st.floats(min_value=0.05, max_value=100.0),
    method=st.sampled_from(["iid", "dirichlet"]),
    seed=st.integers(min_value=0, max_value=1000),
)
def test_partition_either_covers_every_split_or_raises_partition_error(
    n_train: int, n_val: int, n_test: int, num_sites: int, alpha: float, method: str, seed: int
) -> None:
    # Arrange
    splits = _splits(sizes=(n_train, n_val, n_test))

    # Act
    try:
        data = _run(splits, method=method, num_sites=num_sites, seed=seed, alpha=alpha)
    except PartitionError:
        # Assert (refused): some site really is short of examples
        per_site = partition_indices(
            labels=[s.y for s in splits.values()],
            method=method,
            num_sites=num_sites,
            seed=seed,
            alpha=alpha,
        )
        assert any(len(part) == 0 for per_split in per_site for part in per_split)
        return

    # Assert (accepted)
    _assert_disjoint_cover(data, splits)


@needs_breastmnist
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_real_breastmnist_dirichlet_half_alpha_four_sites_leaves_every_site_usable(
    seed: int,
) -> None:
    # Arrange
    splits = load_medmnist_npz(path=BREASTMNIST)

    # Act: raises PartitionError if a site is short of examples
    data = partition(
        train=splits.train,
        val=splits.val,
        test=splits.test,
        method="dirichlet",
        num_sites=4,
        seed=seed,
        alpha=0.5,
        min_examples_per_site=20,
    )

    # Assert
    for site in data.sites.values():
        assert len(site.train) >= 20
        assert len(site.val) > 0 and len(site.test) > 0


def test_quantity_skew_gives_unequal_sizes_with_the_same_label_mix() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 4000)
    split = ArraySplit(x=np.zeros((4000, 1), np.float32), y=y)
    data = partition(
        train=split, val=split, test=split, method="quantity", num_sites=4, seed=1, alpha=1.0
    )
    sizes = [len(s.train) for s in data.sites.values()]
    assert sum(sizes) == 4000 and max(sizes) > 2 * min(sizes)
    shares = [float(s.train.y.mean()) for s in data.sites.values() if len(s.train) > 200]
    assert max(shares) - min(shares) < 0.1  # labels stay mixed alike
    # the same shares cut the test split
    test_sizes = [len(s.test) for s in data.sites.values()]
    np.testing.assert_allclose(np.array(test_sizes) / 4000, np.array(sizes) / 4000, atol=1e-3)
