"""Replay: the strategy's own aggregation run again on the recorded updates, no training.

:func:`replay_round` gives round R's global model bit for bit (the recorded
strategy state before R, the recorded updates, the same ``aggregate``);
:func:`counterfactual` leaves sites out from round R on; :func:`reaggregate`
combines round R's updates with another rule.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from flmi.config import config_from_dict, read_toml
from flmi.config.schema import Config, StrategyConfig
from flmi.core.errors import ConfigError, FlmiError
from flmi.core.messages import ClientUpdate, UpdateKind
from flmi.core.params import Params
from flmi.core.strategy import Strategy
from flmi.forensics.reader import RecordReader
from flmi.wiring import make_strategy


class ReplayMismatchError(FlmiError):
    """A replayed round did not give the recorded model: the record cannot be trusted."""


def run_config(run_dir: Path) -> Config:
    """The validated config snapshot of ``run_dir``."""
    return config_from_dict(read_toml(run_dir / "config.toml"))


def recorded_strategy(reader: RecordReader, *, name: str | None = None) -> Strategy[Any]:
    """The run's strategy rebuilt from its config snapshot, or strategy ``name`` with defaults.

    Raises
    ------
    ConfigError
        The run aggregated with a strategy object its config does not name.
    """
    config = run_config(reader.run_dir)
    if name is not None:
        config = dataclasses.replace(config, strategy=StrategyConfig(name=name, options={}))
    strategy = make_strategy(config, reader.sites)
    if name is None and strategy.name != reader.strategy:
        raise ConfigError(
            f"the record was aggregated by '{reader.strategy}' but the config snapshot builds "
            f"'{strategy.name}' (a strategy object passed to the run); replay needs the "
            "strategy the config names"
        )
    return strategy


def bitwise_equal(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> bool:
    """Whether ``a`` and ``b`` hold the same names, dtypes, shapes and bytes."""
    return set(a) == set(b) and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and a[k].tobytes() == b[k].tobytes()
        for k in a
    )


def replay_round(reader: RecordReader, strategy: Strategy[Any], rnd: int) -> Params:
    """Round ``rnd``'s global model, aggregated again from the record and checked bit for bit.

    Raises
    ------
    ReplayMismatchError
        The result differs from the recorded model in any bit.
    """
    recorded = reader.read(rnd)
    state = strategy.state_from_record(recorded.state_before)
    _, params = strategy.aggregate(rnd, state, list(recorded.updates))
    if not bitwise_equal(params, recorded.params):
        raise ReplayMismatchError(
            f"replaying round {rnd} with '{strategy.name}' did not give the recorded model; "
            "the strategy's aggregation is not deterministic, or the record was made by "
            "another version of flmi (see versions in summary.json)"
        )
    return params


def _rebased(update: ClientUpdate, original: Params, current: Params) -> ClientUpdate:
    """A full-weights update moved from the model it was trained from to ``current``."""
    if update.kind is UpdateKind.DELTA:
        return update
    moved = {
        k: (
            v.astype(np.float64) - original[k].astype(np.float64) + current[k].astype(np.float64)
        ).astype(v.dtype)
        for k, v in update.params.items()
    }
    return dataclasses.replace(update, params=moved)


def counterfactual(
    reader: RecordReader, strategy: Strategy[Any], *, from_round: int, without: Iterable[str]
) -> Params:
    """The last round's model had ``without`` sent nothing from ``from_round`` on.

    FedDebug's approximation: every other site's recorded change (its update
    less the model it was trained from) is applied to the counterfactual
    model, though in truth later updates were trained from the original one.
    A round left with no update keeps the model as it was.

    Raises
    ------
    ConfigError
        ``without`` names a site the federation does not have.
    """
    left_out = set(without)
    unknown = sorted(left_out - set(reader.sites))
    if unknown:
        raise ConfigError(
            f"--without {unknown[0]}: no such site; the sites are {', '.join(reader.sites)}"
        )
    first = reader.read(from_round)
    state = strategy.state_from_record(first.state_before)
    current = reader.global_params(from_round - 1)
    for rnd in [r for r in reader.rounds() if r >= from_round]:
        original = reader.global_params(rnd - 1)
        kept = [
            _rebased(u, original, current)
            for u in reader.read(rnd).updates
            if u.site not in left_out
        ]
        if kept:
            state, current = strategy.aggregate(rnd, state, kept)
    return current


def reaggregate(reader: RecordReader, strategy: Strategy[Any], rnd: int) -> Params:
    """Round ``rnd``'s recorded updates combined by ``strategy``, started fresh.

    ``strategy`` starts from its initial state on the recorded model before
    round ``rnd``: another rule's state (a server optimiser's moments) was
    never recorded.
    """
    recorded = reader.read(rnd)
    state = strategy.init(reader.global_params(rnd - 1))
    _, params = strategy.aggregate(rnd, state, list(recorded.updates))
    return params
