"""Variable local training: per-site overrides of the local-training settings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from flmi.core.messages import HParamValue, TrainInstruction
from flmi.core.strategy import Strategy
from flmi.strategies.wrapper import StrategyWrapper


class PerSiteSettings(StrategyWrapper):
    """Wrap a strategy so chosen sites get their own ``local_epochs``, ``lr``, ...

    The wrapped strategy decides everything else; only the hyperparameters of
    the named sites' instructions change. Works with every strategy, since it
    acts on instructions alone.

    Parameters
    ----------
    inner
        The strategy to wrap.
    overrides
        ``{site: {hparam: value}}``.
    """

    def __init__(
        self, *, inner: Strategy[Any], overrides: Mapping[str, Mapping[str, HParamValue]]
    ) -> None:
        super().__init__(inner=inner)
        self._overrides = {site: dict(values) for site, values in overrides.items() if values}

    def configure(
        self, rnd: int, state: Any, sites: Sequence[str]
    ) -> Mapping[str, TrainInstruction]:
        """The wrapped strategy's instructions, with each named site's settings overridden."""
        out = dict(self._inner.configure(rnd, state, sites))
        for site, values in self._overrides.items():
            if site in out:
                out[site] = replace(out[site], hparams={**out[site].hparams, **values})
        return out
