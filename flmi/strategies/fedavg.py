"""FedAvg: the example-weighted mean of site models."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from flmi.core.messages import ClientUpdate, HParamValue, TrainInstruction, UpdateKind
from flmi.core.params import Params, add_scaled, check_same_schema, copy_params, weighted_mean
from flmi.core.strategy import StateRecord


@dataclass(frozen=True)
class FedAvgState:
    """FedAvg's server state: the current global weights."""

    params: Params


class FedAvg:
    """Federated averaging, weighted by each site's number of training examples.

    McMahan et al., "Communication-Efficient Learning of Deep Networks from
    Decentralized Data", AISTATS 2017. Each sampled site trains the global
    model locally; the server replaces it by the mean of the returned models,
    each weighted by the site's example count, summed in sorted site order so
    the result does not depend on arrival order. Sites may return full weights
    or deltas; deltas are averaged the same way and added to the global model.

    Parameters
    ----------
    hparams
        Local-training settings sent to every site each round.
    """

    def __init__(self, *, hparams: Mapping[str, HParamValue]) -> None:
        self._hparams = dict(hparams)

    @property
    def name(self) -> str:
        """The config name, ``"fedavg"``."""
        return "fedavg"

    def init(self, params: Params) -> FedAvgState:
        """Start from a private copy of the initial weights."""
        return FedAvgState(params=copy_params(params))

    def configure(
        self, rnd: int, state: FedAvgState, sites: Sequence[str]
    ) -> Mapping[str, TrainInstruction]:
        """Send every sampled site the same global weights and settings."""
        instruction = TrainInstruction(rnd=rnd, params=state.params, hparams=self._hparams)
        return {site: instruction for site in sorted(sites)}

    def aggregate(
        self, rnd: int, state: FedAvgState, updates: Sequence[ClientUpdate]
    ) -> tuple[FedAvgState, Params]:
        """Example-weighted mean of the updates (full weights or deltas)."""
        if not updates:
            raise ValueError(f"round {rnd}: FedAvg needs at least one update")
        for update in updates:
            check_same_schema(
                expected=state.params,
                actual=update.params,
                where=f"update from site '{update.site}'",
            )
        kinds = {u.kind for u in updates}
        if len(kinds) != 1:
            raise ValueError(f"round {rnd}: updates mix kinds {sorted(kinds)}; send one kind")
        mean = weighted_mean([(u.site, float(u.num_examples), u.params) for u in updates])
        new = mean if kinds == {UpdateKind.FULL} else add_scaled(state.params, mean, 1.0)
        return FedAvgState(params=new), new

    def state_to_record(self, state: FedAvgState) -> StateRecord:
        """FedAvg's state is the global weights alone."""
        return StateRecord(tensors=state.params)

    def state_from_record(self, record: StateRecord) -> FedAvgState:
        """Rebuild from the global weights."""
        return FedAvgState(params=copy_params(record.tensors))
