"""Variable local training: per-site overrides of the local-training settings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from flmi.core.messages import ClientUpdate, HParamValue, TrainInstruction
from flmi.core.params import Params
from flmi.core.strategy import StateRecord, Strategy


class PerSiteSettings:
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
        self._inner = inner
        self._overrides = {site: dict(values) for site, values in overrides.items() if values}

    @property
    def name(self) -> str:
        """The wrapped strategy's name."""
        return self._inner.name

    def init(self, params: Params) -> Any:
        """The wrapped strategy's initial state."""
        return self._inner.init(params)

    def configure(
        self, rnd: int, state: Any, sites: Sequence[str]
    ) -> Mapping[str, TrainInstruction]:
        """The wrapped strategy's instructions, with each named site's settings overridden."""
        out = dict(self._inner.configure(rnd, state, sites))
        for site, values in self._overrides.items():
            if site in out:
                out[site] = replace(out[site], hparams={**out[site].hparams, **values})
        return out

    def aggregate(
        self, rnd: int, state: Any, updates: Sequence[ClientUpdate]
    ) -> tuple[Any, Params]:
        """Delegated unchanged."""
        return self._inner.aggregate(rnd, state, updates)

    def state_to_record(self, state: Any) -> StateRecord:
        """Delegated unchanged."""
        return self._inner.state_to_record(state)

    def state_from_record(self, record: StateRecord) -> Any:
        """Delegated unchanged."""
        return self._inner.state_from_record(record)
