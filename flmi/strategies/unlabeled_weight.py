"""How much an unlabeled training image counts in aggregation.

A semi-supervised site reports the honest number of images it trained on as
``num_examples`` (labeled plus unlabeled) and the two parts in its training
metrics (``num_labeled``, ``num_unlabeled``). Rules weighted by examples
(FedAvg and its relatives) then weight an unlabeled image like a labeled
one. This wrapper lets the server count each unlabeled image as ``weight`` of
a labeled one instead: ``num_labeled + weight * num_unlabeled`` (at least 1).
The sites' messages are unchanged; only what the wrapped rule is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from flmi.core.keys import TrainMetric
from flmi.core.messages import ClientUpdate
from flmi.core.params import Params
from flmi.strategies.wrapper import UnlabeledWeighting


def reweighted(update: ClientUpdate, *, weight: float) -> ClientUpdate:
    """``update`` with ``num_examples = num_labeled + weight * num_unlabeled`` (at least 1).

    An update without both counts (a site that trained on labeled images only)
    is returned as it is.
    """
    labeled = update.metrics.get(TrainMetric.NUM_LABELED)
    unlabeled = update.metrics.get(TrainMetric.NUM_UNLABELED)
    if labeled is None or unlabeled is None:
        return update
    return replace(update, num_examples=max(1, round(labeled + weight * unlabeled)))


class UnlabeledWeight(UnlabeledWeighting):
    """Wrap a strategy so an unlabeled image counts ``weight`` of a labeled one.

    Parameters
    ----------
    inner
        The strategy to wrap.
    weight
        In ``(0, 1]``; 1 changes nothing.
    """

    def aggregate(
        self, rnd: int, state: Any, updates: Sequence[ClientUpdate]
    ) -> tuple[Any, Params]:
        """The wrapped rule, given each update's example count with unlabeled images reweighted."""
        return self._inner.aggregate(
            rnd, state, [reweighted(u, weight=self._weight) for u in updates]
        )
