"""Shapley values of a cooperative game: exact enumeration and GTG-Shapley sampling.

A game is a set of players (sites) and a value for every coalition
(:data:`Game`); here the value of a coalition is the score of the model its
updates aggregate to. Values are cached by :class:`CachedGame`, so every
coalition is scored once however often the estimators ask for it.

:func:`exact_shapley` enumerates all ``2^n`` coalitions (up to
:data:`MAX_EXACT_PLAYERS` players). :func:`gtg_shapley` is the guided,
truncated Monte Carlo estimator of Liu et al., "GTG-Shapley: Efficient and
Accurate Participant Contribution Evaluation in Federated Learning", ACM TIST
2022: permutations are sampled so each player leads in turn, and once a
permutation's prefix scores within ``within_eps`` of the whole coalition the
remaining players' marginal contributions are taken as 0 without scoring.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

#: The value of a coalition of players.
Game = Callable[[frozenset[str]], float]
#: The most players :func:`exact_shapley` enumerates (2^8 = 256 coalitions).
MAX_EXACT_PLAYERS = 8


class CachedGame:
    """A game whose coalition values are computed once each and counted.

    Parameters
    ----------
    value
        The value of a coalition.
    """

    def __init__(self, *, value: Game) -> None:
        self._value = value
        self._cache: dict[frozenset[str], float] = {}

    def __call__(self, coalition: frozenset[str]) -> float:
        """The value of ``coalition`` (computed on first use)."""
        if coalition not in self._cache:
            self._cache[coalition] = float(self._value(coalition))
        return self._cache[coalition]

    @property
    def evaluations(self) -> int:
        """How many distinct coalitions were valued."""
        return len(self._cache)


def exact_shapley(players: Sequence[str], game: Game) -> dict[str, float]:
    """Every player's Shapley value, by enumerating all coalitions.

    ``phi_i = sum over S not holding i of |S|! (n - |S| - 1)! / n! * (v(S + i) - v(S))``.

    Raises
    ------
    ValueError
        More than :data:`MAX_EXACT_PLAYERS` players.
    """
    n = len(players)
    if n > MAX_EXACT_PLAYERS:
        raise ValueError(
            f"exact Shapley values enumerate 2^{n} coalitions; with more than "
            f"{MAX_EXACT_PLAYERS} players use the GTG-Shapley estimate"
        )
    weights = [math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n) for k in range(n)]
    values: dict[str, float] = {}
    for player in players:
        others = [p for p in players if p != player]
        total = 0.0
        for k in range(n):
            for subset in itertools.combinations(others, k):
                s = frozenset(subset)
                total += weights[k] * (game(s | {player}) - game(s))
        values[player] = total
    return values


def leave_one_out(players: Sequence[str], game: Game) -> dict[str, float]:
    """``v(N) - v(N without i)`` for every player ``i``."""
    everyone = frozenset(players)
    return {p: game(everyone) - game(everyone - {p}) for p in players}


@dataclass(frozen=True)
class GtgSettings:
    """How :func:`gtg_shapley` samples and truncates.

    Parameters
    ----------
    within_eps
        Within a permutation, once the prefix scores within this much of the
        whole coalition, the rest contribute 0 and are not scored.
    tolerance
        Stop once a round of ``n`` permutations changes the estimates by less
        than this share of their mean absolute size.
    max_permutations
        Stop after this many permutations in any case (0: ``10 n``).
    seed
        Seeds the permutations.
    """

    within_eps: float = 1e-3
    tolerance: float = 0.05
    max_permutations: int = 0
    seed: int = 0


def gtg_shapley(players: Sequence[str], game: Game, *, settings: GtgSettings) -> dict[str, float]:
    """Guided, truncated Monte Carlo Shapley values (Liu et al. 2022).

    Every permutation's marginal contributions add up to ``v(N) - v(empty)``
    when nothing is truncated, so the estimate is efficient up to truncation.
    """
    order = list(players)
    n = len(order)
    if n == 0:
        return {}
    everyone, empty = frozenset(order), frozenset[str]()
    full, none = game(everyone), game(empty)
    rng = np.random.default_rng(settings.seed)
    phi = dict.fromkeys(order, 0.0)
    cap = settings.max_permutations or 10 * n
    k = 0
    while k < cap:
        before = dict(phi)
        for lead in order:  # guided sampling: each player leads once per cycle
            if k >= cap:
                break
            k += 1
            rest = [p for p in order if p != lead]
            permutation = [lead, *(rest[i] for i in rng.permutation(len(rest)))]
            previous, prefix = none, empty
            for player in permutation:
                prefix = prefix | {player}
                current = game(prefix) if abs(full - previous) >= settings.within_eps else previous
                phi[player] += (current - previous - phi[player]) / k
                previous = current
        if k >= 2 * n and _converged(before, phi, settings.tolerance):
            break
    return phi


def _converged(before: dict[str, float], after: dict[str, float], tolerance: float) -> bool:
    scale = float(np.mean([abs(v) for v in after.values()]))
    if scale == 0.0:
        return True
    change = float(np.mean([abs(after[p] - before[p]) for p in after]))
    return change / scale < tolerance
