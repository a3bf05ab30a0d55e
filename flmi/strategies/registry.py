"""Strategy names the config can select, and how each is built."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flmi.core.errors import ConfigError
from flmi.core.messages import HParamValue
from flmi.core.strategy import Strategy
from flmi.strategies.fedavg import FedAvg


@dataclass(frozen=True)
class StrategySpec:
    """A selectable strategy: its summary line, its own config keys and a builder."""

    summary: str
    options: Mapping[str, type]
    build: Callable[[Mapping[str, HParamValue], Mapping[str, Any]], Strategy[Any]]


STRATEGIES: Mapping[str, StrategySpec] = {
    "fedavg": StrategySpec(
        summary="FedAvg: example-weighted mean of site models (McMahan et al. 2017)",
        options={},
        build=lambda hparams, _options: FedAvg(hparams=hparams),
    ),
}


def build_strategy(
    *, name: str, hparams: Mapping[str, HParamValue], options: Mapping[str, Any]
) -> Strategy[Any]:
    """Build the strategy the config names, or raise a :class:`ConfigError`."""
    spec = STRATEGIES.get(name)
    if spec is None:
        raise ConfigError(
            f"strategy.name: unknown strategy '{name}'; choose one of {sorted(STRATEGIES)} "
            "(`flmi strategies` lists them)"
        )
    return spec.build(hparams, options)
