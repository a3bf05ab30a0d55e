"""Add the unlabeled sites' change to the labeled sites' aggregate instead of averaging it in.

In a federation where some sites have no labels at all, FedAvg averages the
labeled sites' models with the unlabeled sites' ones. When labels are scarce
and the unlabeled sites hold most of the images, the few labeled sites'
progress is then diluted in every round: the unlabeled sites' small,
self-taught steps act as a brake, and the federation learns from its labels
more slowly than the labeled sites would alone.

This wrapper keeps the two apart, in the spirit of FedMatch's disjoint
learning (Jeong et al., "Federated Semi-Supervised Learning with Inter-Client
Consistency & Disjoint Learning", ICLR 2021), where what the labeled sites
learn and what the unlabeled sites learn are separate terms that the model
sums, and of SemiFL's alternate training (Diao et al., NeurIPS 2022), where
the labeled side is never averaged with the pseudo-labelled side. Each round:

1. the wrapped rule aggregates the updates of the sites that trained on labels
   (every update that does not report ``num_labeled = 0``), as if they were the
   whole federation;
2. the unlabeled sites' example-weighted mean change from the global model
   they received is added to that result, scaled by ``weight``.

A round where only unlabeled sites answered moves the global model by their
scaled mean change alone. With no unlabeled update the wrapped rule runs
unchanged. The sites' messages are the same as under FedAvg; only the server
combines them differently.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from flmi.core.keys import TrainMetric
from flmi.core.messages import ClientUpdate, UpdateKind
from flmi.core.params import Params, add_scaled, subtract, weighted_mean
from flmi.strategies.base import ServerState, contributions
from flmi.strategies.wrapper import UnlabeledWeighting


def trained_without_labels(update: ClientUpdate) -> bool:
    """Whether ``update`` comes from a site that trained on unlabeled images only."""
    return update.metrics.get(TrainMetric.NUM_LABELED) == 0.0


def unlabeled_change(*, rnd: int, reference: Params, updates: Sequence[ClientUpdate]) -> Params:
    """The example-weighted mean change of ``updates`` from ``reference`` (sorted by site)."""
    kind, items = contributions(rnd, "unlabeled sites", reference, updates)
    mean = weighted_mean([(c.site, c.weight, c.tensors) for c in items])
    return mean if kind is UpdateKind.DELTA else subtract(mean, reference)


class UnlabeledAdded(UnlabeledWeighting):
    """Wrap a strategy so unlabeled sites' changes are added, not averaged in.

    Parameters
    ----------
    inner
        The strategy that aggregates the labeled sites. Its state must be a
        :class:`~flmi.strategies.base.ServerState` (one global model: FedAvg,
        FedProx, FedAdam, ...).
    weight
        In ``(0, 1]``: the scale of the unlabeled sites' mean change.
    """

    def aggregate(
        self, rnd: int, state: Any, updates: Sequence[ClientUpdate]
    ) -> tuple[Any, Params]:
        """The labeled sites' aggregate plus ``weight`` times the unlabeled sites' mean change.

        Raises
        ------
        TypeError
            The wrapped strategy keeps no single global model.
        """
        unlabeled = [u for u in updates if trained_without_labels(u)]
        if not unlabeled:
            return self._inner.aggregate(rnd, state, updates)
        if not isinstance(state, ServerState):
            raise TypeError(
                f"federation.unlabeled_aggregation = 'add' needs a strategy with one global "
                f"model; '{self.name}' keeps another kind of state"
            )
        change = unlabeled_change(rnd=rnd, reference=state.params, updates=unlabeled)
        labeled = [u for u in updates if not trained_without_labels(u)]
        if labeled:
            state, base = self._inner.aggregate(rnd, state, labeled)
        else:
            base = state.params
        new = add_scaled(base, change, self._weight)
        return dataclasses.replace(state, params=new), new
