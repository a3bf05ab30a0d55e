"""A strategy that passes everything to the strategy it wraps, for wrappers to build on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from flmi.core.messages import ClientUpdate, TrainInstruction
from flmi.core.params import Params
from flmi.core.strategy import Capabilities, StateRecord, Strategy, capabilities_of


class StrategyWrapper:
    """Delegate every :class:`~flmi.core.strategy.Strategy` method to ``inner``.

    A wrapper that changes one step (the instructions, the aggregation)
    overrides that method alone; everything else is the wrapped strategy's,
    its name, state and :class:`~flmi.core.strategy.Capabilities` included
    (a wrapper that adds a capability declares it on top of the inner ones).

    Parameters
    ----------
    inner
        The strategy to wrap.
    """

    def __init__(self, *, inner: Strategy[Any]) -> None:
        self._inner = inner

    @property
    def name(self) -> str:
        """The wrapped strategy's name."""
        return self._inner.name

    @property
    def capabilities(self) -> Capabilities:
        """The wrapped strategy's capabilities (the state is the wrapped one's too)."""
        return capabilities_of(self._inner)

    def init(self, params: Params) -> Any:
        """The wrapped strategy's initial state."""
        return self._inner.init(params)

    def configure(
        self, rnd: int, state: Any, sites: Sequence[str]
    ) -> Mapping[str, TrainInstruction]:
        """Delegated unchanged."""
        return self._inner.configure(rnd, state, sites)

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


class UnlabeledWeighting(StrategyWrapper):
    """A wrapper with ``federation.unlabeled_weight``, checked to lie in ``(0, 1]``.

    Parameters
    ----------
    inner
        The strategy to wrap.
    weight
        In ``(0, 1]``: what an unlabeled site's contribution counts.
    """

    def __init__(self, *, inner: Strategy[Any], weight: float) -> None:
        if not 0.0 < weight <= 1.0:
            raise ValueError(f"federation.unlabeled_weight must be in (0, 1], got {weight}")
        super().__init__(inner=inner)
        self._weight = weight
