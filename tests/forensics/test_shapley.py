"""Shapley values by enumeration and by GTG-Shapley sampling, on games small enough to check."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flmi.forensics.shapley import (
    CachedGame,
    GtgSettings,
    exact_shapley,
    gtg_shapley,
    leave_one_out,
)

PLAYERS = ["a", "b", "c", "d", "e"]


def _table_game(values: list[float], players: list[str]):  # type: ignore[no-untyped-def]
    """A game given by one value per coalition, indexed by its bit mask over ``players``."""

    def value(coalition: frozenset[str]) -> float:
        return values[sum(1 << i for i, p in enumerate(players) if p in coalition)]

    return value


def test_two_players_by_hand() -> None:
    # v(0) = 0, v(a) = 1, v(b) = 2, v(ab) = 4: phi_a = (1 + (4 - 2)) / 2, phi_b = (2 + (4 - 1)) / 2
    game = _table_game([0.0, 1.0, 2.0, 4.0], ["a", "b"])
    assert exact_shapley(["a", "b"], game) == pytest.approx({"a": 1.5, "b": 2.5}, abs=1e-12)
    assert leave_one_out(["a", "b"], game) == pytest.approx({"a": 2.0, "b": 3.0}, abs=1e-12)


@settings(max_examples=50, deadline=None)
@given(
    st.integers(1, 6).flatmap(lambda n: st.lists(st.floats(-5, 5), min_size=2**n, max_size=2**n))
)
def test_efficiency_the_values_add_up_to_the_grand_coalitions_gain(values: list[float]) -> None:
    n = int(math.log2(len(values)))
    players = list("abcdef")[:n]
    game = _table_game(values, players)
    phi = exact_shapley(players, game)
    assert abs(sum(phi.values()) - (values[-1] - values[0])) < 1e-9


def test_symmetry_interchangeable_players_get_equal_values() -> None:
    weight = {"a": 2.0, "b": 2.0, "c": 5.0, "d": 1.0}

    def game(s: frozenset[str]) -> float:  # a and b enter only through symmetric terms
        synergy = ("a" in s and "c" in s) + ("b" in s and "c" in s)
        return math.sqrt(sum(weight[p] for p in s)) + synergy

    phi = exact_shapley(list(weight), game)
    assert abs(phi["a"] - phi["b"]) < 1e-12
    assert abs(phi["a"] - phi["d"]) > 0.1  # and the game does tell players apart


def test_null_player_a_player_who_changes_no_value_gets_zero() -> None:
    def game(s: frozenset[str]) -> float:
        rest = s - {"null"}
        return len(rest) ** 1.5 + (2.0 if {"a", "b"} <= rest else 0.0)

    phi = exact_shapley(["a", "b", "c", "null"], game)
    assert abs(phi["null"]) < 1e-12
    assert min(abs(phi[p]) for p in "abc") > 0.5


def test_exact_enumeration_refuses_more_than_eight_players() -> None:
    with pytest.raises(ValueError, match="GTG"):
        exact_shapley([f"s{i}" for i in range(9)], lambda s: float(len(s)))


def _smooth_game(s: frozenset[str]) -> float:
    strength = {"a": 0.4, "b": 0.3, "c": 0.2, "d": 0.05, "e": -0.1}
    total = sum(strength[p] for p in s)
    return 1.0 - math.exp(-2.0 * total) + (0.1 if {"a", "e"} <= s else 0.0)


def test_gtg_without_truncation_is_efficient_and_close_to_exact() -> None:
    exact = exact_shapley(PLAYERS, _smooth_game)
    estimate = gtg_shapley(
        PLAYERS,
        _smooth_game,
        settings=GtgSettings(within_eps=0.0, tolerance=0.0, max_permutations=400, seed=1),
    )
    # Every permutation's marginals telescope to v(N) - v(empty), so their mean does too.
    full_gain = _smooth_game(frozenset(PLAYERS)) - _smooth_game(frozenset())
    assert abs(sum(estimate.values()) - full_gain) < 1e-9
    for p in PLAYERS:
        assert abs(estimate[p] - exact[p]) < 0.02, p
    assert min(estimate, key=estimate.__getitem__) == min(exact, key=exact.__getitem__) == "e"


def test_gtg_truncation_scores_fewer_coalitions() -> None:
    def saturating(s: frozenset[str]) -> float:  # "a" alone reaches the grand coalition's value
        return 1.0 if "a" in s else 0.1 * len(s)

    counted = CachedGame(value=saturating)
    gtg_shapley(PLAYERS, counted, settings=GtgSettings(within_eps=1e-6, max_permutations=25))
    truncated = counted.evaluations
    counted_all = CachedGame(value=saturating)
    gtg_shapley(PLAYERS, counted_all, settings=GtgSettings(within_eps=0.0, max_permutations=25))
    assert truncated < counted_all.evaluations
