"""FedAvg: the example-weighted mean of site models."""

from __future__ import annotations

from collections.abc import Mapping

from flmi.core.messages import HParamValue
from flmi.strategies.base import ComposedStrategy, NoState, Replace, ServerState, WeightedMean

#: FedAvg's server state: the current global weights (``.params``) and no rule state.
FedAvgState = ServerState[NoState]


class FedAvg(ComposedStrategy[NoState]):
    """FedAvg: the mean of site models, weighted by examples (McMahan et al. 2017).

    McMahan et al., "Communication-Efficient Learning of Deep Networks from
    Decentralized Data", AISTATS 2017. Each sampled site trains the global
    model locally; the server replaces it by the mean of the returned models,
    each weighted by the site's example count, summed in sorted site order so
    the result does not depend on arrival order. Sites may return full weights
    or deltas; deltas are averaged the same way and added to the global model.

    It is :class:`~flmi.strategies.base.WeightedMean` followed by
    :class:`~flmi.strategies.base.Replace`, and linear in the updates.

    Parameters
    ----------
    hparams
        Local-training settings sent to every site each round.
    """

    def __init__(self, *, hparams: Mapping[str, HParamValue]) -> None:
        super().__init__(name="fedavg", hparams=hparams, aggregator=WeightedMean(), rule=Replace())
