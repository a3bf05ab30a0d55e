"""Each site's contribution, from the record: leave-one-out and Shapley values.

Round by round (as GTG-Shapley does): in round ``t`` the value of a coalition
``S`` of that round's sites is the score of the model the strategy
aggregates from ``S``'s recorded updates, starting from its recorded state
before ``t`` (the empty coalition: the model before ``t``). A site's value is
the sum over rounds of its value in each round, so for FedAvg the values of
all sites add up to ``score(final model) - score(initial model)``: each
round's full coalition is the round's own model. A round whose model scores
within ``between_eps`` of the model before it is skipped (between-round
truncation): it moved the score too little to share out.

Leave-one-out is ``sum over t of v_t(N) - v_t(N without i)``; it uses the same
coalition values.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from flmi.core.errors import ConfigError, FlmiError
from flmi.core.keys import Manifest
from flmi.core.params import Params
from flmi.core.strategy import Strategy, capabilities_of
from flmi.forensics.reader import RecordedRound, RecordReader
from flmi.forensics.shapley import (
    MAX_EXACT_PLAYERS,
    CachedGame,
    GtgSettings,
    exact_shapley,
    gtg_shapley,
    leave_one_out,
)

#: A model's score; higher is better.
Utility = Callable[[Params], float]
Method = Literal["auto", "exact", "gtg"]


@dataclass(frozen=True)
class ContributionSettings:
    """How contributions are estimated.

    Parameters
    ----------
    method
        ``"exact"`` enumerates every coalition (up to 8 sites a round),
        ``"gtg"`` samples permutations (GTG-Shapley), ``"auto"`` is exact up
        to :data:`AUTO_EXACT_SITES` sites and GTG beyond.
    between_eps
        Skip a round whose model scores within this of the model before it.
    gtg
        GTG-Shapley's sampling and within-round truncation.
    """

    method: Method = "auto"
    between_eps: float = 1e-3
    gtg: GtgSettings = field(default_factory=GtgSettings)


#: ``method = "auto"`` enumerates exactly up to this many sites a round.
AUTO_EXACT_SITES = 4


@dataclass(frozen=True)
class Contributions:
    """Per-site values summed over rounds, and what they cost.

    ``full_value`` is the score of the last round's model, ``empty_value``
    that of the model before the first recorded round.
    """

    shapley: Mapping[str, float]
    leave_one_out: Mapping[str, float]
    method: str
    rounds_scored: Sequence[int]
    rounds_truncated: Sequence[int]
    coalitions_evaluated: int
    full_value: float
    empty_value: float
    wall_s: float

    def ranking(self) -> list[str]:
        """Sites by Shapley value, highest first (ties by name)."""
        return sorted(self.shapley, key=lambda s: (-self.shapley[s], s))

    def to_json(self, *, metric: str) -> dict[str, Any]:
        """The ``contributions`` section of ``summary.json``."""
        return {
            Manifest.METRIC: metric,
            Manifest.METHOD: self.method,
            Manifest.SITES: {
                s: {
                    Manifest.SHAPLEY: self.shapley[s],
                    Manifest.LEAVE_ONE_OUT: self.leave_one_out[s],
                }
                for s in self.ranking()
            },
            Manifest.RANKING: self.ranking(),
            Manifest.ROUNDS_SCORED: list(self.rounds_scored),
            Manifest.ROUNDS_TRUNCATED: list(self.rounds_truncated),
            Manifest.COALITIONS: self.coalitions_evaluated,
            Manifest.FULL_VALUE: self.full_value,
            Manifest.EMPTY_VALUE: self.empty_value,
            Manifest.WALL_S: round(self.wall_s, 3),
        }


def _coalition_game(
    recorded: RecordedRound,
    strategy: Strategy[Any],
    utility: Utility,
    before: Params,
) -> Callable[[frozenset[str]], float]:
    """``S -> utility(model aggregated from S's updates)`` for one round."""

    def value(coalition: frozenset[str]) -> float:
        if not coalition:
            return utility(before)
        updates = [u for u in recorded.updates if u.site in coalition]
        state = strategy.state_from_record(recorded.state_before)
        try:
            _, params = strategy.aggregate(recorded.rnd, state, updates)
        except (FlmiError, ValueError) as exc:
            raise ConfigError(
                f"strategy '{strategy.name}' cannot aggregate the coalition "
                f"{sorted(coalition)} of round {recorded.rnd} ({exc}); score contributions "
                "with a rule that takes any number of updates (--strategy fedavg)"
            ) from None
        return utility(params)

    return value


def _round_values(
    players: list[str], game: CachedGame, settings: ContributionSettings, rnd: int
) -> tuple[dict[str, float], str]:
    method = settings.method
    if method == "auto":
        method = "exact" if len(players) <= AUTO_EXACT_SITES else "gtg"
    if method == "exact":
        if len(players) > MAX_EXACT_PLAYERS:
            raise ConfigError(
                f"round {rnd} aggregated {len(players)} sites; exact Shapley values enumerate "
                f"2^{len(players)} coalitions, at most {MAX_EXACT_PLAYERS} sites: use --method gtg"
            )
        return exact_shapley(players, game), method
    gtg = GtgSettings(
        within_eps=settings.gtg.within_eps,
        tolerance=settings.gtg.tolerance,
        max_permutations=settings.gtg.max_permutations,
        seed=settings.gtg.seed + rnd,
    )
    return gtg_shapley(players, game, settings=gtg), method


def site_contributions(
    reader: RecordReader,
    strategy: Strategy[Any],
    utility: Utility,
    *,
    settings: ContributionSettings,
) -> Contributions:
    """Shapley and leave-one-out values of every site, round by round from the record.

    Raises
    ------
    ConfigError
        The strategy keeps a model per site (nothing single to score), or
        cannot aggregate a coalition.
    """
    if not capabilities_of(strategy).one_global_model:
        raise ConfigError(
            f"strategy '{strategy.name}' scores each site with its own model: there is no "
            "one coalition model to score, so contributions are not defined for it"
        )
    started = time.perf_counter()
    shapley = dict.fromkeys(reader.sites, 0.0)
    loo = dict.fromkeys(reader.sites, 0.0)
    scored: list[int] = []
    truncated: list[int] = []
    evaluations, methods = 0, set()
    rounds = reader.rounds()
    first_value = utility(reader.global_params(rounds[0] - 1)) if rounds else float("nan")
    last_value = first_value
    for rnd in rounds:
        recorded = reader.read(rnd)
        before = reader.global_params(rnd - 1)
        game = CachedGame(value=_coalition_game(recorded, strategy, utility, before))
        players = recorded.sites
        full, empty = game(frozenset(players)), game(frozenset())
        last_value = full
        if abs(full - empty) < settings.between_eps:
            truncated.append(rnd)
            evaluations += game.evaluations
            continue
        values, method = _round_values(players, game, settings, rnd)
        methods.add(method)
        for site, v in values.items():
            shapley[site] += v
        for site, v in leave_one_out(players, game).items():
            loo[site] += v
        scored.append(rnd)
        evaluations += game.evaluations
    return Contributions(
        shapley=shapley,
        leave_one_out=loo,
        method="+".join(sorted(methods)) or settings.method,
        rounds_scored=scored,
        rounds_truncated=truncated,
        coalitions_evaluated=evaluations,
        full_value=last_value,
        empty_value=first_value,
        wall_s=time.perf_counter() - started,
    )
