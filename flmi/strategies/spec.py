"""What a selectable strategy is: a :class:`StrategySpec` (options, builder, traits)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flmi.core.errors import ConfigError
from flmi.core.messages import HParamValue
from flmi.core.strategy import Strategy
from flmi.core.suggest import one_line, suggest
from flmi.strategies.options import Option, OptionValue, check_type


@dataclass(frozen=True)
class BuildContext:
    """What some strategies need to know about the federation they serve.

    Parameters
    ----------
    num_sites
        Sites in the federation (SCAFFOLD's ``N``).
    seed
        The run seed (the order in which cyclic training visits sites).
    site_groups
        ``{site: group}`` from ``[sites.NAME] group`` (FedNorm's modalities).
    site_names
        Every site's name, once the data is loaded (empty while only the
        config is checked).
    """

    num_sites: int = 1
    seed: int = 0
    site_groups: Mapping[str, str] = field(default_factory=dict)
    site_names: tuple[str, ...] = ()


Builder = Callable[[Mapping[str, HParamValue], Mapping[str, Any], BuildContext], Strategy[Any]]


def _one_update(_options: Mapping[str, Any]) -> int:
    return 1


@dataclass(frozen=True)
class StrategySpec:
    """A selectable strategy.

    Parameters
    ----------
    summary
        One line for ``flmi strategies``: what it does and its paper.
    options
        Its own ``[strategy]`` keys, each with a type, a default and a help line.
    build
        Builds the strategy from the local-training settings and the options,
        which :meth:`resolve_options` has already type-checked and completed
        with defaults. Out-of-range values raise a :class:`ConfigError` naming
        ``strategy.KEY``.
    linear
        Whether the aggregate is a linear function of the updates (a weighted
        sum), which secure aggregation requires.
    min_updates
        The fewest valid updates a round needs under the given (resolved) options.
    max_updates
        The most updates a round produces (cyclic training: one), if bounded.
    """

    summary: str
    options: Mapping[str, Option]
    build: Builder
    linear: bool = False
    min_updates: Callable[[Mapping[str, Any]], int] = field(default=_one_update)
    max_updates: int | None = None

    def option_types(self) -> dict[str, type]:
        """``{key: type}`` for every option (what the config checks values against)."""
        return {key: option.type for key, option in self.options.items()}

    def defaults(self) -> dict[str, OptionValue]:
        """``{key: default}`` for every option."""
        return {key: option.default for key, option in self.options.items()}

    def resolve_options(self, options: Mapping[str, Any]) -> dict[str, OptionValue]:
        """Every option's value: the given ones, type-checked, and defaults for the rest.

        Raises
        ------
        ConfigError
            An unknown key, or a value of the wrong type, naming ``strategy.KEY``.
        """
        resolved = self.defaults()
        for key, value in sorted(options.items()):
            if key not in self.options:
                keys = ["name", *self.options]
                takes = suggest(
                    key,
                    keys,
                    f"this strategy takes: {one_line(keys, quote='')}",
                    shown="'strategy.{}'",
                )
                raise ConfigError(f"unknown key 'strategy.{key}'; {takes}")
            resolved[key] = check_type(key, value, self.options[key].type)
        return resolved


def fixed(make: Callable[[Mapping[str, HParamValue]], Strategy[Any]]) -> Builder:
    """A builder for a strategy that takes no options and needs no :class:`BuildContext`."""

    def build(
        hparams: Mapping[str, HParamValue], _options: Mapping[str, Any], _context: BuildContext
    ) -> Strategy[Any]:
        return make(hparams)

    return build
