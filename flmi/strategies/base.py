"""The composable shape of a server-side algorithm: an aggregator and a server rule.

Every strategy in :mod:`flmi.strategies` is one :class:`ComposedStrategy`:

1. the **aggregator** (:class:`Aggregator`) combines the sampled sites'
   updates, given as :class:`Contribution` objects in sorted site order, into
   one set of tensors: the *aggregate*;
2. the **server rule** (:class:`ServerRule`) moves the global model with that
   aggregate: :class:`Replace` takes it as the new global model (FedAvg), a
   server optimiser steps on the pseudo-gradient ``global - aggregate``
   (FedAvgM, FedAdam, ...; see :mod:`flmi.strategies.fedopt`).

All state is explicit and immutable: :class:`ServerState` holds the global
weights and the rule's own state (a frozen dataclass such as
:class:`NoState`); nothing is kept in ``self`` between rounds, so a strategy
object can be shared, and a checkpoint (:meth:`ComposedStrategy.state_to_record`)
is the whole truth.

Update kinds
------------
Sites may send full weights (:attr:`UpdateKind.FULL`) or the change from the
global weights they were sent (:attr:`UpdateKind.DELTA`); one round must not mix
the two. The aggregator sees the tensors as sent and returns its aggregate in
the same kind; :class:`ComposedStrategy` then turns a delta aggregate into full
weights by adding it to the current global model (in the global model's
dtype), so the server rule always sees full weights. Aggregators that are
translation-equivariant (every mean, median or selection rule) give the same
result either way, up to rounding.

Determinism
-----------
Updates are validated and combined in sorted site order, accumulated in
float64, and every tensor is returned in its own dtype. Example counts enter
only as normalised weights ``n_i / sum(n)``; for integer counts these are the
same floating-point numbers after scaling every count by an integer factor.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

import numpy as np

from flmi.core.messages import ClientUpdate, HParamValue, TrainInstruction, UpdateKind
from flmi.core.params import Params, add_scaled, check_same_schema, copy_params, weighted_mean
from flmi.core.strategy import JSONValue, StateRecord

#: Version of the state-record layout written by :meth:`ComposedStrategy.state_to_record`.
RECORD_FORMAT = 1
#: Prefix of the global weights' keys in a state record (``"params/<tensor>"``).
PARAMS_SLOT = "params"


@dataclass(frozen=True)
class Contribution:
    """One site's update as an aggregator sees it.

    Parameters
    ----------
    site
        The site's name; aggregators receive contributions sorted by it.
    weight
        The site's number of training examples, as a float (always positive).
    num_steps
        Local optimiser steps the site reports (:attr:`ClientUpdate.num_steps`).
    tensors
        Full weights or a delta, as the site sent them (every contribution of a
        round has the same kind and the same schema as the global model).
    """

    site: str
    weight: float
    num_steps: int
    tensors: Params


class Aggregator(Protocol):
    """Combines one round's contributions into one aggregate (stateless)."""

    def combine(
        self, *, reference: Params, kind: UpdateKind, items: Sequence[Contribution]
    ) -> Params:
        """The aggregate of ``items``, in their kind.

        Parameters
        ----------
        reference
            The current global weights (the weights every site started from).
        kind
            Whether ``items`` hold full weights or deltas from ``reference``.
        items
            At least one contribution, sorted by site, all of ``reference``'s schema.

        Returns
        -------
        Params
            Full weights if ``kind`` is FULL, else a delta from ``reference``;
            each tensor in ``reference``'s dtype.
        """
        ...


R = TypeVar("R")


class ServerRule(Protocol[R]):
    """How the aggregate moves the global model, with its own explicit state ``R``."""

    def init(self, params: Params) -> R:
        """The rule's state before round 1, from the initial global weights."""
        ...

    def step(self, *, state: R, params: Params, aggregate: Params) -> tuple[R, Params]:
        """New rule state and new global weights.

        Parameters
        ----------
        state
            The rule's state after the previous round.
        params
            The current global weights.
        aggregate
            The aggregator's result as full weights; the pseudo-gradient is
            ``params - aggregate``.
        """
        ...

    def state_tensors(self, state: R) -> Mapping[str, Params]:
        """The state as named slots of tensors (for a checkpoint); no slot is ``"params"``."""
        ...

    def state_from_tensors(self, *, slots: Mapping[str, Params], params: Params) -> R:
        """Rebuild the state from :meth:`state_tensors`' slots and the global weights."""
        ...


@runtime_checkable
class AggregatesUpdates(Protocol):
    """A strategy that can report its aggregate *before* its server step.

    For a strategy with a server optimiser the new global weights are not the
    aggregate of the updates; the conformance suite (:func:`flmi.testing.check_strategy`)
    uses this method to check that N identical updates aggregate to themselves.
    """

    def aggregate_updates(self, rnd: int, state: Any, updates: Sequence[ClientUpdate]) -> Params:
        """The aggregate of ``updates`` as full weights, before the server step."""
        ...


@dataclass(frozen=True)
class NoState:
    """The state of a rule that keeps none (:class:`Replace`)."""


@dataclass(frozen=True)
class ServerState(Generic[R]):
    """A composed strategy's whole server state.

    Parameters
    ----------
    params
        The current global weights, each tensor in its own dtype.
    rule
        The server rule's own state (for example FedAdam's moments).
    """

    params: Params
    rule: R


class WeightedMean:
    """The example-weighted mean of the contributions (FedAvg's aggregator).

    Linear in the updates and translation-equivariant, so full weights and
    deltas give the same global model up to rounding.
    """

    def combine(
        self, *, reference: Params, kind: UpdateKind, items: Sequence[Contribution]
    ) -> Params:
        """``sum_i n_i t_i / sum_i n_i``, summed in sorted site order in float64."""
        return weighted_mean([(c.site, c.weight, c.tensors) for c in items])


class Replace:
    """The server rule that takes the aggregate as the new global model (FedAvg's)."""

    def init(self, params: Params) -> NoState:
        """Nothing to keep."""
        return NoState()

    def step(self, *, state: NoState, params: Params, aggregate: Params) -> tuple[NoState, Params]:
        """The aggregate is the new global model."""
        return state, aggregate

    def state_tensors(self, state: NoState) -> Mapping[str, Params]:
        """No slots."""
        return {}

    def state_from_tensors(self, *, slots: Mapping[str, Params], params: Params) -> NoState:
        """Nothing to rebuild."""
        return NoState()


def as_float64(params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Float64 copies of every tensor, in name order."""
    return {k: np.asarray(params[k], dtype=np.float64) for k in sorted(params)}


def cast_like(values: Mapping[str, np.ndarray], like: Mapping[str, np.ndarray]) -> Params:
    """``values`` cast tensor by tensor to the dtypes of ``like``, in name order."""
    return {k: np.asarray(values[k]).astype(like[k].dtype, copy=False) for k in sorted(like)}


def contributions(
    rnd: int, strategy: str, reference: Params, updates: Sequence[ClientUpdate]
) -> tuple[UpdateKind, list[Contribution]]:
    """Validate one round's updates and return their kind and sorted contributions.

    Raises
    ------
    ValueError
        No updates, one site twice, mixed kinds, or an example count below 1.
    flmi.core.errors.SchemaError
        An update whose tensor names, shapes or dtypes differ from the global
        model's; the message names the tensor and the site.
    """
    if not updates:
        raise ValueError(f"round {rnd}: {strategy} needs at least one update")
    ordered = sorted(updates, key=lambda u: u.site)
    for before, after in itertools.pairwise(ordered):
        if before.site == after.site:
            raise ValueError(f"round {rnd}: two updates from site '{after.site}'")
    for update in ordered:
        check_same_schema(
            expected=reference, actual=update.params, where=f"update from site '{update.site}'"
        )
        if update.num_examples < 1:
            raise ValueError(
                f"round {rnd}: update from site '{update.site}' claims "
                f"{update.num_examples} examples; at least 1 is needed"
            )
    kinds = {u.kind for u in ordered}
    if len(kinds) != 1:
        raise ValueError(f"round {rnd}: updates mix kinds {sorted(kinds)}; send one kind")
    items = [
        Contribution(
            site=u.site, weight=float(u.num_examples), num_steps=u.num_steps, tensors=u.params
        )
        for u in ordered
    ]
    return ordered[0].kind, items


class ComposedStrategy(Generic[R]):
    """A strategy made of an aggregator and a server rule.

    Each round every sampled site gets the same global weights and local
    settings; the updates are validated, combined by ``aggregator`` and
    applied by ``rule``. Use it directly to compose your own (for example a
    coordinate-wise median followed by server momentum), or through the named
    strategies of :mod:`flmi.strategies`.

    Parameters
    ----------
    name
        The name the config selects the strategy by; it is written in every
        state record and checked when one is read back.
    hparams
        Local-training settings sent to every site each round.
    aggregator
        Combines the updates (:class:`WeightedMean`, a robust rule, ...).
    rule
        Moves the global model (:class:`Replace` or a server optimiser).
    """

    def __init__(
        self,
        *,
        name: str,
        hparams: Mapping[str, HParamValue],
        aggregator: Aggregator,
        rule: ServerRule[R],
    ) -> None:
        self._name = name
        self._hparams = dict(hparams)
        self._aggregator = aggregator
        self._rule = rule

    @property
    def name(self) -> str:
        """The config name of this strategy."""
        return self._name

    def init(self, params: Params) -> ServerState[R]:
        """Start from a private copy of the initial weights and the rule's initial state."""
        own = copy_params(params)
        return ServerState(params=own, rule=self._rule.init(own))

    def configure(
        self, rnd: int, state: ServerState[R], sites: Sequence[str]
    ) -> Mapping[str, TrainInstruction]:
        """Send every sampled site the same global weights and settings."""
        instruction = TrainInstruction(rnd=rnd, params=state.params, hparams=self._hparams)
        return {site: instruction for site in sorted(sites)}

    def aggregate_updates(
        self, rnd: int, state: ServerState[R], updates: Sequence[ClientUpdate]
    ) -> Params:
        """The aggregator's result as full weights, before the server rule moves the model.

        The pseudo-gradient a server optimiser steps on is ``state.params``
        minus this. See :class:`AggregatesUpdates`.
        """
        kind, items = contributions(rnd, self._name, state.params, updates)
        combined = self._aggregator.combine(reference=state.params, kind=kind, items=items)
        if kind is UpdateKind.FULL:
            return combined
        return add_scaled(state.params, combined, 1.0)

    def aggregate(
        self, rnd: int, state: ServerState[R], updates: Sequence[ClientUpdate]
    ) -> tuple[ServerState[R], Params]:
        """Combine the updates, step the server rule, return the new state and weights."""
        combined = self.aggregate_updates(rnd, state, updates)
        rule_state, new = self._rule.step(state=state.rule, params=state.params, aggregate=combined)
        return ServerState(params=new, rule=rule_state), new

    def state_to_record(self, state: ServerState[R]) -> StateRecord:
        """``params/<tensor>`` for the global weights, ``<slot>/<tensor>`` for the rule's state."""
        tensors: Params = {f"{PARAMS_SLOT}/{k}": v for k, v in sorted(state.params.items())}
        for slot, values in sorted(self._rule.state_tensors(state.rule).items()):
            tensors.update({f"{slot}/{k}": v for k, v in sorted(values.items())})
        meta: dict[str, JSONValue] = {"strategy": self._name, "format": RECORD_FORMAT}
        return StateRecord(tensors=tensors, meta=meta)

    def state_from_record(self, record: StateRecord) -> ServerState[R]:
        """Rebuild the state written by :meth:`state_to_record`.

        A record without ``format`` in its meta is read as the layout FedAvg
        wrote before server rules existed: the global weights under their own
        names, and the rule's initial state.

        Raises
        ------
        ValueError
            The record was written by another strategy or a newer layout.
        """
        written_by = record.meta.get("strategy")
        if written_by is not None and written_by != self._name:
            raise ValueError(
                f"the state record was written by strategy '{written_by}', "
                f"not '{self._name}'; resume with the same strategy.name"
            )
        layout = record.meta.get("format")
        if layout is None:
            params = copy_params(record.tensors)
            return ServerState(params=params, rule=self._rule.init(params))
        if layout != RECORD_FORMAT:
            raise ValueError(f"state record format {layout!r} is not {RECORD_FORMAT}")
        slots: dict[str, Params] = {}
        for key in sorted(record.tensors):
            slot, sep, tensor = key.partition("/")
            if not sep or not tensor:
                raise ValueError(f"state record tensor '{key}' is not named '<slot>/<tensor>'")
            slots.setdefault(slot, {})[tensor] = np.array(record.tensors[key], copy=True)
        params = slots.pop(PARAMS_SLOT, {})
        return ServerState(
            params=params, rule=self._rule.state_from_tensors(slots=slots, params=params)
        )
