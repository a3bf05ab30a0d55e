"""Example-weighted median and trimmed mean: the vote cap, hand-worked cases and properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from flmi.core.messages import ClientUpdate
from flmi.strategies import weighted_order
from flmi.strategies.robust import (
    GeometricMedian,
    GeometricMedianOptions,
    Median,
    MedianOptions,
    TrimmedMean,
    TrimmedMeanOptions,
)
from flmi.strategies.weighted_order import (
    canonical_weights,
    vote_weights,
    weighted_median,
    weighted_trimmed_mean,
)
from tests.strategies.support import HPARAMS, update, vec

UNCAPPED = 1.0


def _median(cap: float = 0.3) -> Median:
    return Median(hparams=HPARAMS, options=MedianOptions(max_weight_share=cap))


def _trimmed(trim: float = 0.2, cap: float = 0.3) -> TrimmedMean:
    return TrimmedMean(
        hparams=HPARAMS, options=TrimmedMeanOptions(trim_fraction=trim, max_weight_share=cap)
    )


def _geometric(cap: float = 0.3, weighting: str = "examples") -> GeometricMedian:
    return GeometricMedian(
        hparams=HPARAMS,
        options=GeometricMedianOptions(
            max_iter=1000, eps=1e-10, weighting=weighting, max_weight_share=cap
        ),
    )


def _aggregate(
    strategy: Median | TrimmedMean | GeometricMedian, updates: list[ClientUpdate]
) -> np.ndarray:
    width = updates[0].params["w"].shape
    _, params = strategy.aggregate(1, strategy.init({"w": np.zeros(width)}), updates)
    return np.asarray(params["w"])


def _column_updates(values: np.ndarray, counts: list[int]) -> list[ClientUpdate]:
    """One update per row of ``values``, named so that sorted order is row order."""
    return [
        update(f"s{i:02d}", {"w": row.copy()}, n)
        for i, (row, n) in enumerate(zip(values, counts, strict=True))
    ]


# -- the vote cap, by hand ----------------------------------------------------------------------


def test_integer_counts_are_reduced_by_their_common_divisor() -> None:
    np.testing.assert_array_equal(canonical_weights([6, 9, 3]), [2.0, 3.0, 1.0])
    np.testing.assert_array_equal(canonical_weights([0.5, 2.0]), [0.25, 1.0])


def test_one_site_above_the_cap_is_lowered_to_exactly_the_cap() -> None:
    # Counts reduced by their divisor 10: 10 1 1 1 1, and site 0 holds 10 / 14 > 0.3. With it
    # capped at t and the other 4 left alone: t / (t + 4) = 0.3, so t = 0.3 * 4 / 0.7 = 12 / 7.
    w = vote_weights([100, 10, 10, 10, 10], max_share=0.3)
    np.testing.assert_allclose(w, [12 / 7, 1, 1, 1, 1], rtol=1e-15)
    assert w[0] / w.sum() == pytest.approx(0.3, rel=1e-14)


def test_two_sites_above_the_cap_are_both_lowered_and_the_others_keep_their_ratios() -> None:
    # Divided by 5: 20 2 20 1 3. Capping only the first (t = 0.3 * 26 / 0.7 = 11.1) leaves the
    # second at 20 > t, so both are capped: t = 0.3 * 6 / (1 - 0.6) = 4.5, shares 4.5 / 15 = 0.3.
    w = vote_weights([100, 10, 100, 5, 15], max_share=0.3)
    np.testing.assert_allclose(w, [4.5, 2, 4.5, 1, 3], rtol=1e-15)


def test_a_cap_at_or_below_one_over_n_gives_every_site_one_vote() -> None:
    np.testing.assert_array_equal(vote_weights([100, 1, 7, 3], max_share=0.25), np.ones(4))
    np.testing.assert_array_equal(vote_weights([100, 1, 7], max_share=0.3), np.ones(3))


def test_weights_within_the_cap_are_left_alone() -> None:
    np.testing.assert_array_equal(vote_weights([3, 2, 2, 3], max_share=0.3), [3, 2, 2, 3])


@pytest.mark.parametrize("bad", [[], [1.0, 0.0], [1.0, float("inf")], [-2.0, 1.0]])
def test_vote_weights_refuse_weights_that_are_not_finite_and_positive(bad: list[float]) -> None:
    with pytest.raises(ValueError, match="finite and positive"):
        vote_weights(bad, max_share=0.3)


def test_vote_weights_refuse_a_cap_outside_zero_to_one() -> None:
    with pytest.raises(ValueError, match=r"max_share must be in \(0, 1\]"):
        vote_weights([1.0, 2.0], max_share=0.0)


# -- the rules, by hand -------------------------------------------------------------------------


def test_weighted_median_worked_by_hand_with_and_without_the_cap() -> None:
    # Values 0 1 2 3 4, counts 10 1 1 1 1. Uncapped, site a holds 10 of 14 > half: it decides.
    # Capped at 0.3: a's weight t = 0.3 * 4 / 0.7 = 12/7; total 12/7 + 4 = 40/7, half 20/7.
    # Cumulative 12/7, 19/7, 26/7: the first above 20/7 is the third value, 2.
    counts = [10, 1, 1, 1, 1]
    updates = [
        update(s, vec(float(v)), n) for s, v, n in zip("abcde", range(5), counts, strict=True)
    ]
    assert _aggregate(_median(UNCAPPED), updates)[0] == 0.0
    assert _aggregate(_median(0.3), updates)[0] == 2.0
    # One vote each: the middle value, also 2.
    uniform = Median(hparams=HPARAMS, options=MedianOptions(weighting="uniform"))
    assert _aggregate(uniform, updates)[0] == 2.0


def test_weighted_median_of_an_even_split_is_the_mean_of_the_two_sides() -> None:
    # Values 0, 1, 10 with counts 2, 1, 3: cumulative 2, 3 = exactly half of 6 at value 1,
    # so the result is (1 + 10) / 2. With counts 2, 2, 3 it passes half at 1: the result is 1.
    split = [update("a", vec(0.0), 2), update("b", vec(1.0), 1), update("c", vec(10.0), 3)]
    assert _aggregate(_median(UNCAPPED), split)[0] == 5.5
    past = [update("a", vec(0.0), 2), update("b", vec(1.0), 2), update("c", vec(10.0), 3)]
    assert _aggregate(_median(UNCAPPED), past)[0] == 1.0


def test_weighted_trimmed_mean_worked_by_hand() -> None:
    # Values 0 1 2 3 100 with counts 1 2 3 4 5 and trim 0.2: one site cut at each end (0 and
    # 100), then (2 * 1 + 3 * 2 + 4 * 3) / (2 + 3 + 4) = 20 / 9. The cut site e (5 of 15 > 0.3)
    # is capped, which changes nobody else's weight.
    updates = [
        update(s, vec(float(v)), n)
        for s, v, n in zip("abcde", [0, 1, 2, 3, 100], range(1, 6), strict=True)
    ]
    np.testing.assert_allclose(_aggregate(_trimmed(0.2), updates), [20 / 9], rtol=1e-15)
    # Nothing trimmed and no cap: FedAvg's weighted mean, (2 + 6 + 12 + 500) / 15.
    np.testing.assert_allclose(_aggregate(_trimmed(0.0, UNCAPPED), updates), [520 / 15], rtol=1e-15)


# -- a lying example count ----------------------------------------------------------------------


def _honest_and_liar(liar_value: float) -> list[ClientUpdate]:
    honest = [update(f"h{i}", vec(v), 50) for i, v in enumerate([0.1, 0.4, 0.5, 0.9])]
    return [*honest, update("liar", vec(liar_value), 10**9)]


def test_an_uncapped_weighted_median_belongs_to_whoever_claims_the_most_examples() -> None:
    assert _aggregate(_median(UNCAPPED), _honest_and_liar(1e6))[0] == 1e6


def test_the_cap_stops_a_lying_count_from_buying_the_median() -> None:
    # Capped at 0.3 the liar holds 0.3 of the vote and the four honest sites 0.175 each:
    # cumulative from the bottom 0.175, 0.35, 0.525 > 0.5, so the third honest value, 0.5.
    assert _aggregate(_median(0.3), _honest_and_liar(1e6))[0] == 0.5


def test_the_cap_bounds_a_lying_count_inside_the_trimmed_mean() -> None:
    # A liar whose value sits inside the honest range survives trimming. With nothing trimmed
    # and no cap it owns the mean; capped at 0.3 it weighs 0.3 against 0.7 for the honest mean
    # 0.475: 0.3 * 0.8 + 0.7 * 0.475 = 0.5725.
    updates = _honest_and_liar(0.8)
    np.testing.assert_allclose(_aggregate(_trimmed(0.0, UNCAPPED), updates), [0.8], atol=1e-6)
    np.testing.assert_allclose(_aggregate(_trimmed(0.0, 0.3), updates), [0.5725], rtol=1e-14)


# -- properties ---------------------------------------------------------------------------------

VALUES = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@st.composite
def weighted_columns(
    draw: st.DrawFn, min_sites: int = 1, max_sites: int = 9
) -> tuple[np.ndarray, list[int]]:
    """``(n, 7)`` values with repeats likely (ties), and n example counts."""
    n = draw(st.integers(min_sites, max_sites))
    pool = draw(st.lists(VALUES, min_size=1, max_size=4))
    values = draw(arrays(np.float64, (n, 7), elements=st.one_of(VALUES, st.sampled_from(pool))))
    counts = draw(st.lists(st.integers(1, 1000), min_size=n, max_size=n))
    return values, counts


def _reference_median(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The definition, one coordinate at a time (slow, obviously right)."""
    out = []
    for column in values.T:
        pairs = sorted(zip(column, range(len(column)), strict=True))  # ties by row
        total = float(np.sum(weights))
        running = 0.0
        for j, (value, row) in enumerate(pairs):
            running += float(weights[row])
            if 2.0 * running == total:
                out.append((value + pairs[j + 1][0]) / 2.0)
                break
            if 2.0 * running > total:
                out.append(value)
                break
    return np.array(out)


@settings(max_examples=60, deadline=None)
@given(case=weighted_columns(), cap=st.sampled_from([1.0, 0.5, 0.3, 0.2]))
def test_weighted_median_matches_its_definition_coordinate_by_coordinate(
    case: tuple[np.ndarray, list[int]], cap: float
) -> None:
    values, counts = case
    weights = vote_weights(counts, max_share=cap)
    np.testing.assert_array_equal(
        weighted_median(list(values), weights), _reference_median(values, weights)
    )


@settings(max_examples=60, deadline=None)
@given(case=weighted_columns(), cap=st.sampled_from([1.0, 0.3]))
def test_weighted_median_lies_within_the_range_of_the_updates(
    case: tuple[np.ndarray, list[int]], cap: float
) -> None:
    values, counts = case
    out = _aggregate(_median(cap), _column_updates(values, counts))
    assert np.all(out >= values.min(axis=0)) and np.all(out <= values.max(axis=0))


@settings(max_examples=60, deadline=None)
@given(case=weighted_columns(), count=st.integers(1, 1000))
def test_with_equal_counts_the_weighted_rules_equal_the_uniform_ones(
    case: tuple[np.ndarray, list[int]], count: int
) -> None:
    values, _ = case
    same = _column_updates(values, [count] * len(values))
    uniform_median = Median(hparams=HPARAMS, options=MedianOptions(weighting="uniform"))
    np.testing.assert_array_equal(
        _aggregate(_median(UNCAPPED), same), _aggregate(uniform_median, same)
    )
    np.testing.assert_array_equal(np.median(values, axis=0), _aggregate(_median(0.3), same))
    uniform_trimmed = TrimmedMean(hparams=HPARAMS, options=TrimmedMeanOptions(weighting="uniform"))
    np.testing.assert_allclose(
        _aggregate(_trimmed(), same), _aggregate(uniform_trimmed, same), rtol=1e-12, atol=1e-9
    )


@settings(max_examples=60, deadline=None)
@given(case=weighted_columns(min_sites=2), decider=st.integers(0, 8))
def test_a_site_holding_more_than_half_of_the_weight_decides_the_weighted_median(
    case: tuple[np.ndarray, list[int]], decider: int
) -> None:
    values, counts = case
    decider %= len(counts)
    counts[decider] = sum(c for i, c in enumerate(counts) if i != decider) + 1
    out = _aggregate(_median(UNCAPPED), _column_updates(values, counts))
    np.testing.assert_array_equal(out, values[decider])


@settings(max_examples=60, deadline=None)
@given(case=weighted_columns(min_sites=2), cap=st.floats(0.01, 1.0))
def test_no_site_holds_more_than_the_cap_and_the_others_keep_their_ratios(
    case: tuple[np.ndarray, list[int]], cap: float
) -> None:
    _, counts = case
    w = vote_weights(counts, max_share=cap)
    shares = w / np.sum(w)
    if cap * len(counts) <= 1.0:
        np.testing.assert_array_equal(w, np.ones(len(counts)))
        return
    assert np.max(shares) <= cap * (1 + 1e-12)
    canonical = canonical_weights(counts)
    lowered = w < canonical
    # Untouched sites keep their weight; the lowered ones all sit at the cap, above every other.
    np.testing.assert_array_equal(w[~lowered], canonical[~lowered])
    if np.any(lowered):
        np.testing.assert_allclose(shares[lowered], cap, rtol=1e-12)
        assert np.min(w[lowered]) >= np.max(w[~lowered], initial=0.0)


@settings(max_examples=60, deadline=None)
@given(
    case=weighted_columns(min_sites=3),
    trim=st.sampled_from([0.1, 0.2, 0.34, 0.49]),
    push=arrays(np.float64, (9, 7), elements=st.floats(0.0, 1e9)),
)
def test_trimmed_values_never_influence_the_weighted_trimmed_mean(
    case: tuple[np.ndarray, list[int]], trim: float, push: np.ndarray
) -> None:
    # Move every value the rule drops further out, by any amount: the result keeps its bits.
    values, counts = case
    n = len(values)
    k = min(int(trim * n + 1e-9), (n - 1) // 2)
    order = np.argsort(values, axis=0, kind="stable")  # ties by row, as the rule orders them
    moved = values.copy()
    cols = np.arange(values.shape[1])
    for rank in range(k):
        low, high = order[rank], order[n - 1 - rank]
        moved[low, cols] -= push[rank, cols]
        moved[high, cols] += push[n - 1 - rank, cols]
    before = _aggregate(_trimmed(trim), _column_updates(values, counts))
    after = _aggregate(_trimmed(trim), _column_updates(moved, counts))
    np.testing.assert_array_equal(before, after)


@settings(max_examples=40, deadline=None)
@given(case=weighted_columns(min_sites=3), trim=st.sampled_from([0.0, 0.2, 0.4]))
def test_weighted_trimmed_mean_lies_within_the_range_of_the_values_kept(
    case: tuple[np.ndarray, list[int]], trim: float
) -> None:
    values, counts = case
    n = len(values)
    k = min(int(trim * n + 1e-9), (n - 1) // 2)
    ordered = np.sort(values, axis=0)
    out = weighted_trimmed_mean(list(values), vote_weights(counts, max_share=0.3), k)
    slack = 1e-9 * np.maximum(1.0, np.abs(ordered).max(axis=0))
    assert np.all(out >= ordered[k] - slack) and np.all(out <= ordered[n - 1 - k] + slack)


def test_large_tensors_are_combined_block_by_block_with_the_same_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Blocks of 4 coordinates over a (5, 3, 7) tensor: 105 coordinates in 27 blocks.
    rng = np.random.default_rng(0)
    rows = [rng.integers(-3, 4, size=(5, 3, 7)).astype(np.float32) for _ in range(6)]
    weights = vote_weights([5, 1, 7, 2, 9, 3], max_share=0.3)
    whole_median = weighted_median(rows, weights)
    whole_trimmed = weighted_trimmed_mean(rows, weights, 1)
    monkeypatch.setattr(weighted_order, "BLOCK", 4)
    np.testing.assert_array_equal(weighted_median(rows, weights), whole_median)
    np.testing.assert_array_equal(weighted_trimmed_mean(rows, weights, 1), whole_trimmed)
    flat = np.stack([r.reshape(-1) for r in rows]).astype(np.float64)
    np.testing.assert_array_equal(whole_median, _reference_median(flat, weights))


def test_trimming_too_many_values_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot trim 2 of 4 values"):
        weighted_trimmed_mean([np.zeros(2)] * 4, np.ones(4), 2)


# -- the geometric median's weights -------------------------------------------------------------


def test_a_site_claiming_a_billion_examples_decides_the_uncapped_geometric_median_only() -> None:
    # Four honest sites near the origin, one far away that claims 10^9 examples.
    honest = [vec(0.0, 0.0), vec(1.0, 0.0), vec(0.0, 1.0), vec(1.0, 1.0)]
    liar = vec(1000.0, -1000.0)
    updates = [update(f"s{i}", p, 100) for i, p in enumerate(honest)]
    updates.append(update("s9", liar, 10**9))

    uncapped = _aggregate(_geometric(cap=UNCAPPED), updates)
    capped = _aggregate(_geometric(), updates)

    np.testing.assert_allclose(uncapped, [1000.0, -1000.0], atol=1e-3)
    # Capped at 0.3, the liar holds less than half: the median stays by the honest points.
    assert float(np.linalg.norm(capped - np.array([0.5, 0.5]))) < 1.0


def test_uniform_geometric_median_ignores_the_reported_counts() -> None:
    points = [vec(0.0, 0.0), vec(2.0, 0.0), vec(1.0, 3.0)]
    few = [update(f"s{i}", p, n) for i, (p, n) in enumerate(zip(points, [6, 2, 2], strict=True))]
    same = [update(f"s{i}", p, 1) for i, p in enumerate(points)]

    np.testing.assert_allclose(
        _aggregate(_geometric(weighting="uniform"), few),
        _aggregate(_geometric(weighting="uniform"), same),
        atol=1e-12,
    )


@settings(max_examples=40, deadline=None)
@given(
    honest=arrays(
        np.float64,
        st.tuples(st.integers(4, 8), st.integers(1, 4)),
        elements=st.floats(-1.0, 1.0, allow_nan=False),
    ),
    counts=st.lists(st.integers(1, 500), min_size=8, max_size=8),
    scale=st.sampled_from([1e2, 1e4, 1e6]),
    claimed=st.sampled_from([1, 10**3, 10**9]),
)
def test_one_faulty_site_cannot_drag_the_capped_geometric_median_away(
    honest: np.ndarray, counts: list[int], scale: float, claimed: int
) -> None:
    # With the cap at 0.3 one site holds at most 0.3 of the weight, below the breakdown
    # point 1/2, so the median stays within a distance of the honest points that does not
    # grow with the faulty update's size: at most (1 + 2a / (1 - 2a)) times the honest
    # spread, 2.5 times for a = 0.3, around any honest point.
    n, d = honest.shape
    faulty = np.full(d, scale)
    updates = [update(f"s{i}", {"w": honest[i].copy()}, counts[i]) for i in range(n)] + [
        update("z", {"w": faulty}, claimed)
    ]

    result = _aggregate(_geometric(), updates)

    spread = 2.0 * np.sqrt(d)  # the honest points lie in [-1, 1]^d
    assert float(np.linalg.norm(result - honest[0])) <= 2.5 * spread + 1e-6


@settings(max_examples=30, deadline=None)
@given(
    points=arrays(
        np.float64,
        st.tuples(st.integers(2, 6), st.integers(1, 3)),
        elements=st.floats(-5.0, 5.0, allow_nan=False),
    ),
    count=st.integers(1, 1000),
)
def test_equal_counts_give_the_uniform_geometric_median(points: np.ndarray, count: int) -> None:
    updates = _column_updates(points, [count] * len(points))
    np.testing.assert_allclose(
        _aggregate(_geometric(), updates),
        _aggregate(_geometric(weighting="uniform"), updates),
        atol=1e-9,
    )
