"""Hiding a simulated site's training labels: the labels are gone, not just ignored."""

from __future__ import annotations

import numpy as np
import pytest

from flmi.core.errors import ConfigError
from flmi.data.arrays import ArraySplit, FederatedData, SiteSplits
from flmi.data.unlabeled import hide_labels, keep_training_share, without_unlabeled_sites


def _split(n: int, offset: int) -> ArraySplit:
    x = (np.arange(n, dtype=np.float32) + offset).reshape(n, 1, 1, 1)
    return ArraySplit(x=x, y=(np.arange(n) % 2).astype(np.int64))


def _data() -> FederatedData:
    sites = {
        name: SiteSplits(train=_split(20, 100 * i), val=_split(4, 50), test=_split(4, 60))
        for i, name in enumerate(["a", "b", "c"])
    }
    return FederatedData(sites=sites, central_test=_split(6, 70))


def test_an_unlabeled_site_keeps_its_images_and_loses_every_training_label() -> None:
    out = hide_labels(data=_data(), labeled_fractions={"b": 0.0}, seed=0)
    b = out.sites["b"]
    assert len(b.train) == 0 and b.train.y.shape == (0,)
    assert b.unlabeled is not None and b.num_unlabeled == 20
    # The images are the site's own, in order; nothing but images is kept.
    np.testing.assert_array_equal(b.unlabeled, _data().sites["b"].train.x)
    assert isinstance(b.unlabeled, np.ndarray) and b.unlabeled.ndim == 4
    # Evaluation splits and other sites are untouched.
    assert len(b.val) == 4 and len(b.test) == 4
    assert out.sites["a"].unlabeled is None and len(out.sites["a"].train) == 20


def test_a_labeled_fraction_splits_the_training_images_without_overlap() -> None:
    out = hide_labels(data=_data(), labeled_fractions={"c": 0.25}, seed=3)
    c = out.sites["c"]
    assert len(c.train) == 5 and c.num_unlabeled == 15
    kept = set(c.train.x.ravel().tolist())
    hidden = set(c.unlabeled.ravel().tolist()) if c.unlabeled is not None else set()
    assert not kept & hidden
    assert kept | hidden == set(_data().sites["c"].train.x.ravel().tolist())
    # Each kept example still carries its own label.
    original = _data().sites["c"].train
    for x, y in zip(c.train.x.ravel(), c.train.y, strict=True):
        assert original.y[int(x) - 200] == y


def test_the_same_seed_hides_the_same_labels_and_another_seed_others() -> None:
    one = hide_labels(data=_data(), labeled_fractions={"a": 0.5}, seed=1).sites["a"]
    same = hide_labels(data=_data(), labeled_fractions={"a": 0.5}, seed=1).sites["a"]
    other = hide_labels(data=_data(), labeled_fractions={"a": 0.5}, seed=2).sites["a"]
    np.testing.assert_array_equal(one.train.x, same.train.x)
    assert not np.array_equal(one.train.x, other.train.x)


def test_an_unknown_site_or_fraction_out_of_range_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"\[sites.zz\]"):
        hide_labels(data=_data(), labeled_fractions={"zz": 0.0}, seed=0)
    with pytest.raises(ConfigError, match="sites.a.labeled_fraction"):
        hide_labels(data=_data(), labeled_fractions={"a": 1.5}, seed=0)


def test_sites_without_any_labeled_example_can_be_left_out() -> None:
    data = hide_labels(data=_data(), labeled_fractions={"a": 0.0, "b": 0.5}, seed=0)
    kept, left_out = without_unlabeled_sites(data)
    assert left_out == ["a"]
    assert sorted(kept.sites) == ["b", "c"]


def test_a_train_fraction_drops_examples_outright_and_keeps_their_labels_with_them() -> None:
    out = keep_training_share(data=_data(), fractions={"a": 0.25}, seed=4)
    a = out.sites["a"]
    assert len(a.train) == 5 and a.unlabeled is None  # dropped, not made unlabeled
    original = _data().sites["a"].train
    assert set(a.train.x.ravel().tolist()) < set(original.x.ravel().tolist())
    for x, y in zip(a.train.x.ravel(), a.train.y, strict=True):
        assert original.y[int(x)] == y
    assert np.all(np.diff(a.train.x.ravel()) > 0)  # kept in their original order
    assert len(a.val) == 4 and len(a.test) == 4
    assert len(out.sites["b"].train) == 20


def test_the_same_seed_keeps_the_same_share_and_at_least_one_example() -> None:
    one = keep_training_share(data=_data(), fractions={"b": 0.5}, seed=1).sites["b"]
    same = keep_training_share(data=_data(), fractions={"b": 0.5}, seed=1).sites["b"]
    other = keep_training_share(data=_data(), fractions={"b": 0.5}, seed=2).sites["b"]
    np.testing.assert_array_equal(one.train.x, same.train.x)
    assert not np.array_equal(one.train.x, other.train.x)
    tiny = keep_training_share(data=_data(), fractions={"b": 0.01}, seed=1).sites["b"]
    assert len(tiny.train) == 1


def test_a_train_fraction_for_an_unknown_site_or_out_of_range_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"\[sites.zz\]"):
        keep_training_share(data=_data(), fractions={"zz": 0.5}, seed=0)
    with pytest.raises(ConfigError, match="sites.a.train_fraction"):
        keep_training_share(data=_data(), fractions={"a": 0.0}, seed=0)
