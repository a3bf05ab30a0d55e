"""Median, trimmed mean, (Multi-)Krum and geometric median: hand-worked cases and properties."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from flmi.core.errors import ConfigError
from flmi.core.messages import ClientUpdate, UpdateKind
from flmi.strategies.base import ComposedStrategy
from flmi.strategies.robust import (
    GeometricMedian,
    GeometricMedianOptions,
    Krum,
    KrumOptions,
    Median,
    MedianOptions,
    TrimmedMean,
    TrimmedMeanOptions,
)
from tests.strategies.support import (
    HPARAMS,
    assert_close,
    assert_same_bits,
    copies_of,
    permuted,
    scaled,
    site_updates,
    update,
    vec,
    zeros,
)

# Five updates of two coordinates; site d is an outlier in the first coordinate.
FIVE = [
    update("a", vec(1.0, 10.0), 1),
    update("b", vec(2.0, 20.0), 2),
    update("c", vec(3.0, -5.0), 3),
    update("d", vec(100.0, 0.0), 4),
    update("e", vec(-4.0, 7.0), 5),
]


UNIFORM_MEDIAN = MedianOptions(weighting="uniform")


def test_median_of_five_updates_worked_by_hand() -> None:
    strategy = Median(hparams=HPARAMS, options=UNIFORM_MEDIAN)
    # first coordinate: sorted -4, 1, 2, 3, 100 -> 2;  second: -5, 0, 7, 10, 20 -> 7
    _, params = strategy.aggregate(1, strategy.init(vec(0.0, 0.0)), FIVE)
    np.testing.assert_array_equal(params["w"], [2.0, 7.0])


def test_median_of_an_even_number_is_the_mean_of_the_middle_two() -> None:
    strategy = Median(hparams=HPARAMS, options=UNIFORM_MEDIAN)
    # first coordinate: sorted -4, 1, 2, 3 -> (1 + 2) / 2;  second: -5, 7, 10, 20 -> (7 + 10) / 2
    four = [u for u in FIVE if u.site != "d"]
    _, params = strategy.aggregate(1, strategy.init(vec(0.0, 0.0)), four)
    np.testing.assert_array_equal(params["w"], [1.5, 8.5])


def test_trimmed_mean_of_five_updates_worked_by_hand() -> None:
    strategy = TrimmedMean(
        hparams=HPARAMS, options=TrimmedMeanOptions(trim_fraction=0.2, weighting="uniform")
    )
    # k = floor(0.2 * 5) = 1 dropped at each end, per coordinate:
    # first: -4, [1, 2, 3], 100 -> 2;  second: -5, [0, 7, 10], 20 -> 17 / 3
    _, params = strategy.aggregate(1, strategy.init(vec(0.0, 0.0)), FIVE)
    np.testing.assert_allclose(params["w"], [2.0, 17.0 / 3.0], rtol=1e-15)


def test_trimmed_mean_with_nothing_trimmed_is_the_plain_mean() -> None:
    strategy = TrimmedMean(
        hparams=HPARAMS, options=TrimmedMeanOptions(trim_fraction=0.0, weighting="uniform")
    )
    _, params = strategy.aggregate(1, strategy.init(vec(0.0, 0.0)), FIVE)
    np.testing.assert_allclose(params["w"], [102.0 / 5.0, 32.0 / 5.0], rtol=1e-15)


# Four inliers around (1, 1) and a far outlier. Squared distances: d to a, b, c: 2 each;
# a-b = a-c = 4, b-c = 8. With f = 1 each score sums the n - f - 2 = 2 nearest:
# d: 2 + 2 = 4;  a: 2 + 4 = 6;  b: 2 + 4 = 6;  c: 2 + 4 = 6;  e: huge.
KRUM_CASE = [
    update("a", vec(0.0, 0.0), 1),
    update("b", vec(2.0, 0.0), 1),
    update("c", vec(0.0, 2.0), 1),
    update("d", vec(1.0, 1.0), 1),
    update("e", vec(100.0, -100.0), 50),
]


def test_krum_chooses_the_most_central_update_not_the_outlier() -> None:
    strategy = Krum(hparams=HPARAMS, options=KrumOptions(num_byzantine=1, num_selected=1))
    _, params = strategy.aggregate(1, strategy.init(vec(0.0, 0.0)), KRUM_CASE)
    np.testing.assert_array_equal(params["w"], [1.0, 1.0])


def test_multi_krum_averages_the_best_scores_ties_going_to_the_first_site_name() -> None:
    strategy = Krum(hparams=HPARAMS, options=KrumOptions(num_byzantine=1, num_selected=3))
    # d (4), then a and b (6, tied with c; a and b sort first): mean of d, a, b, unweighted
    # = ([1, 1] + [0, 0] + [2, 0]) / 3 = [1, 1/3]
    _, params = strategy.aggregate(1, strategy.init(vec(0.0, 0.0)), KRUM_CASE[::-1])
    np.testing.assert_allclose(params["w"], [1.0, 1.0 / 3.0], rtol=1e-15)


def test_krum_refuses_too_few_updates_naming_the_option() -> None:
    strategy = Krum(hparams=HPARAMS, options=KrumOptions(num_byzantine=1))
    with pytest.raises(ConfigError, match=r"strategy\.num_byzantine = 1.*more than 2f \+ 2 = 4"):
        strategy.aggregate(1, strategy.init(vec(0.0, 0.0)), KRUM_CASE[:4])


def test_multi_krum_refuses_to_select_more_updates_than_arrived() -> None:
    strategy = Krum(hparams=HPARAMS, options=KrumOptions(num_byzantine=0, num_selected=6))
    with pytest.raises(ConfigError, match=r"strategy\.num_selected = 6"):
        strategy.aggregate(1, strategy.init(vec(0.0, 0.0)), KRUM_CASE)


def test_geometric_median_of_an_isosceles_triangle_is_its_fermat_point() -> None:
    # For (0, 0), (2, 0), (1, 3) with equal weights every angle is below 120 degrees, so the
    # geometric median is the Fermat point, on the axis x = 1, where the base subtends 120
    # degrees: tan(60) = 1 / y, y = 1 / sqrt(3) = 0.57735. (The centroid is (1, 1).)
    strategy = GeometricMedian(
        hparams=HPARAMS, options=GeometricMedianOptions(max_iter=1000, eps=1e-12)
    )
    points = [update("a", vec(0.0, 0.0)), update("b", vec(2.0, 0.0)), update("c", vec(1.0, 3.0))]
    _, params = strategy.aggregate(1, strategy.init(vec(0.0, 0.0)), points)
    np.testing.assert_allclose(params["w"], [1.0, 1.0 / math.sqrt(3.0)], atol=1e-9)
    # The default options get close too.
    default = GeometricMedian(hparams=HPARAMS)
    _, params = default.aggregate(1, default.init(vec(0.0, 0.0)), points)
    np.testing.assert_allclose(params["w"], [1.0, 1.0 / math.sqrt(3.0)], atol=1e-5)


def test_geometric_median_weights_by_examples() -> None:
    # A point holding more than half the weight is the weighted geometric median (uncapped).
    strategy = GeometricMedian(
        hparams=HPARAMS, options=GeometricMedianOptions(eps=1e-12, max_weight_share=1.0)
    )
    points = [
        update("a", vec(0.0, 0.0), 6),
        update("b", vec(2.0, 0.0), 2),
        update("c", vec(1.0, 3.0), 2),
    ]
    _, params = strategy.aggregate(1, strategy.init(vec(0.0, 0.0)), points)
    np.testing.assert_allclose(params["w"], [0.0, 0.0], atol=1e-6)


@pytest.mark.parametrize(
    ("make", "key"),
    [
        (lambda: TrimmedMeanOptions(trim_fraction=0.5), "trim_fraction"),
        (lambda: TrimmedMeanOptions(trim_fraction=-0.1), "trim_fraction"),
        (lambda: TrimmedMeanOptions(weighting="count"), "weighting"),
        (lambda: TrimmedMeanOptions(max_weight_share=0.0), "max_weight_share"),
        (lambda: MedianOptions(weighting="Examples"), "weighting"),
        (lambda: MedianOptions(max_weight_share=1.5), "max_weight_share"),
        (lambda: MedianOptions(max_weight_share=float("nan")), "max_weight_share"),
        (lambda: KrumOptions(num_byzantine=-1), "num_byzantine"),
        (lambda: KrumOptions(num_selected=0), "num_selected"),
        (lambda: GeometricMedianOptions(max_iter=0), "max_iter"),
        (lambda: GeometricMedianOptions(eps=0.0), "eps"),
    ],
)
def test_out_of_range_options_raise_a_config_error_naming_the_key(make: Any, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"strategy\.{key} must be"):
        make()


# -- properties ---------------------------------------------------------------------------------

ROBUST: dict[str, Callable[[], ComposedStrategy[Any]]] = {
    "median": lambda: Median(hparams=HPARAMS),
    "median_uniform": lambda: Median(hparams=HPARAMS, options=UNIFORM_MEDIAN),
    "median_uncapped": lambda: Median(hparams=HPARAMS, options=MedianOptions(max_weight_share=1.0)),
    "trimmed_mean": lambda: TrimmedMean(hparams=HPARAMS),
    "trimmed_mean_uniform": lambda: TrimmedMean(
        hparams=HPARAMS, options=TrimmedMeanOptions(weighting="uniform")
    ),
    "krum": lambda: Krum(hparams=HPARAMS, options=KrumOptions(num_byzantine=1)),
    "multi_krum": lambda: Krum(
        hparams=HPARAMS, options=KrumOptions(num_byzantine=1, num_selected=3)
    ),
    "geometric_median": lambda: GeometricMedian(hparams=HPARAMS),
}


@pytest.mark.parametrize("name", sorted(ROBUST))
@settings(max_examples=25, deadline=None)
@given(updates=site_updates(min_sites=5, max_sites=8), seed=st.integers(0, 2**32 - 1))
def test_order_of_sites_does_not_change_the_aggregate(
    name: str, updates: list[ClientUpdate], seed: int
) -> None:
    strategy = ROBUST[name]()
    state = strategy.init(zeros())
    _, a = strategy.aggregate(1, state, updates)
    _, b = strategy.aggregate(1, state, permuted(updates, seed))
    assert_same_bits(a, b)


@pytest.mark.parametrize("name", sorted(ROBUST))
@settings(max_examples=25, deadline=None)
@given(
    updates=site_updates(min_sites=1, max_sites=1),
    counts=st.lists(st.integers(1, 1000), min_size=5, max_size=8),
)
def test_identical_updates_aggregate_to_that_update(
    name: str, updates: list[ClientUpdate], counts: list[int]
) -> None:
    strategy = ROBUST[name]()
    _, out = strategy.aggregate(1, strategy.init(zeros()), copies_of(updates[0], counts))
    assert_close(out, updates[0].params, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("name", sorted(ROBUST))
@settings(max_examples=25, deadline=None)
@given(updates=site_updates(min_sites=5, max_sites=8), factor=st.integers(2, 1000))
def test_scaling_all_example_counts_changes_nothing(
    name: str, updates: list[ClientUpdate], factor: int
) -> None:
    strategy = ROBUST[name]()
    state = strategy.init(zeros())
    _, a = strategy.aggregate(1, state, updates)
    _, b = strategy.aggregate(1, state, scaled(updates, factor))
    assert_close(a, b)


# The example-weighted trimmed mean jumps where a kept and a trimmed value of sites with
# different weights cross (the weighted median does not: it returns one of the two values).
WEIGHTS_FOLLOW_SITES = {"trimmed_mean"}


@pytest.mark.parametrize("name", sorted(ROBUST))
@settings(max_examples=25, deadline=None)
@given(updates=site_updates(min_sites=5, max_sites=8), seed=st.integers(0, 2**32 - 1))
def test_deltas_give_the_same_model_as_full_weights(
    name: str, updates: list[ClientUpdate], seed: int
) -> None:
    strategy = ROBUST[name]()
    start = {k: np.random.default_rng(seed).normal(size=v.shape) for k, v in zeros().items()}
    if name in WEIGHTS_FOLLOW_SITES:
        # Its weights follow the sites, so rounding that reorders two values an ulp apart
        # moves weight from one kept site to another: compare where the shift is exact
        # (values on a grid of 1/1024, an integer start).
        start = {k: np.round(v) for k, v in start.items()}
        updates = [
            update(
                u.site, {k: np.round(v * 1024) / 1024 for k, v in u.params.items()}, u.num_examples
            )
            for u in updates
        ]
    deltas = [
        update(
            u.site,
            {k: u.params[k] - start[k] for k in start},
            u.num_examples,
            kind=UpdateKind.DELTA,
        )
        for u in updates
    ]
    _, a = strategy.aggregate(1, strategy.init(start), updates)
    _, b = strategy.aggregate(1, strategy.init(start), deltas)
    # The geometric median stops within eps * (1 + |z|) of convergence in either form.
    tolerance = 1e-4 if name == "geometric_median" else 1e-9
    assert_close(a, b, rtol=tolerance, atol=tolerance * 1e3)


@st.composite
def inliers_and_outlier(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """4..7 inliers in [-1, 1]^6 and one outlier of magnitude up to 1e12 with random signs."""
    n = draw(st.integers(4, 7))
    inliers = draw(arrays(np.float64, (n, 6), elements=st.floats(-1, 1)))
    size = draw(st.floats(1e3, 1e12))
    signs = draw(arrays(np.float64, (6,), elements=st.sampled_from([-1.0, 1.0])))
    return inliers, size * signs


def _with_outlier(inliers: np.ndarray, outlier: np.ndarray) -> list[ClientUpdate]:
    rows = [*inliers, outlier]
    # The outlier's name sorts in the middle, so sorted order does not set it apart.
    return [update(f"s{i:02d}", {"w": np.array(row)}, 10) for i, row in enumerate(rows)][::-1]


@pytest.mark.parametrize(
    "name",
    ["median", "median_uniform", "trimmed_mean", "trimmed_mean_uniform", "krum", "multi_krum"],
)
@settings(max_examples=40, deadline=None)
@given(case=inliers_and_outlier())
def test_one_huge_outlier_leaves_the_result_within_the_inliers_range(
    name: str, case: tuple[np.ndarray, np.ndarray]
) -> None:
    inliers, outlier = case
    strategy = ROBUST[name]()
    _, params = strategy.aggregate(
        1, strategy.init({"w": np.zeros(6)}), _with_outlier(inliers, outlier)
    )
    low, high = inliers.min(axis=0), inliers.max(axis=0)
    assert np.all(params["w"] >= low - 1e-12) and np.all(params["w"] <= high + 1e-12)


@settings(max_examples=40, deadline=None)
@given(case=inliers_and_outlier())
def test_one_huge_outlier_moves_the_geometric_median_a_bounded_amount(
    case: tuple[np.ndarray, np.ndarray],
) -> None:
    # With inliers in a ball B(c, r) holding weight W and an outlier of weight w < W, the
    # objective increases outward at any distance D with W sqrt(1 - r^2 / D^2) > w, so the
    # geometric median lies within r / sqrt(1 - (w / W)^2) of c, however far the outlier is.
    inliers, outlier = case
    strategy = GeometricMedian(hparams=HPARAMS)
    _, params = strategy.aggregate(
        1, strategy.init({"w": np.zeros(6)}), _with_outlier(inliers, outlier)
    )
    centre = inliers.mean(axis=0)
    radius = float(np.max(np.linalg.norm(inliers - centre, axis=1)))
    ratio = 1.0 / len(inliers)
    bound = radius / math.sqrt(1.0 - ratio**2)
    # Distances below eps count as eps (the smoothing that keeps Weiszfeld's weights finite),
    # so with every inlier at one point the result may sit up to about eps away from it.
    smoothing = 2 * 1e-6  # twice the default eps
    assert float(np.linalg.norm(params["w"] - centre)) <= bound * (1 + 1e-3) + smoothing
