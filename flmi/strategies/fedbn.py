"""FedBN and FedPxN: normalisation layers stay at each site."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from flmi.core.keys import HParam, KeepLocal
from flmi.core.messages import ClientUpdate, HParamValue, TrainInstruction, UpdateKind
from flmi.core.params import Params, check_same_schema, copy_params
from flmi.core.strategy import Capabilities, StateRecord
from flmi.strategies.fedprox import ProxOptions


@dataclass(frozen=True)
class FedBNState:
    """The shared weights (normalisation tensors keep their initial values here)."""

    params: Params


class FedBN:
    """FedBN: average everything but the normalisation layers, which stay at each site.

    Li et al., "FedBN: Federated Learning on Non-IID Features via Local Batch
    Normalization", ICLR 2021. Each instruction asks sites to keep their
    normalisation layers (BatchNorm, GroupNorm, LayerNorm, InstanceNorm): a
    site restores its own copies from its site state before training, saves
    them after, and sends only the other tensors. The server averages, by
    examples, the tensors every update carries and leaves the others as they
    are. Each site is scored with its own normalisation layers, and there is
    no single central model to score. Suited to feature shift between
    hospitals (scanners, protocols). With ``mu > 0`` it is FedPxN (FedProx's
    proximal term plus local normalisation).

    Parameters
    ----------
    hparams
        Local-training settings sent to every site each round.
    mu
        FedProx's proximal coefficient (0: plain FedBN).
    name
        ``"fedbn"`` or ``"fedpxn"``.
    """

    def __init__(self, *, hparams: Mapping[str, HParamValue], mu: float, name: str) -> None:
        extra: dict[str, HParamValue] = {HParam.KEEP_LOCAL: KeepLocal.NORM.value}
        if mu > 0:
            extra[HParam.PROX_MU] = mu
        self._hparams = {**hparams, **extra}
        self._name = name

    @property
    def name(self) -> str:
        """The config name."""
        return self._name

    @property
    def capabilities(self) -> Capabilities:
        """Personalised: sites keep their normalisation layers."""
        return Capabilities(personalised=True)

    def init(self, params: Params) -> FedBNState:
        """Start from a private copy of the initial weights."""
        return FedBNState(params=copy_params(params))

    def configure(
        self, rnd: int, state: FedBNState, sites: Sequence[str]
    ) -> Mapping[str, TrainInstruction]:
        """The shared weights and ``keep_local = "norm"`` to every sampled site."""
        instruction = TrainInstruction(rnd=rnd, params=state.params, hparams=self._hparams)
        return {site: instruction for site in sorted(sites)}

    def aggregate_updates(
        self, rnd: int, state: FedBNState, updates: Sequence[ClientUpdate]
    ) -> Params:
        """Example-weighted mean of the tensors all updates carry; the rest unchanged."""
        if not updates:
            raise ValueError(f"round {rnd}: FedBN needs at least one update")
        ordered = sorted(updates, key=lambda u: u.site)
        shared = set.intersection(*(set(u.params) for u in ordered))
        for update in ordered:
            unknown = sorted(set(update.params) - set(state.params))
            expected = {k: v for k, v in state.params.items() if k in update.params}
            check_same_schema(
                expected=expected if not unknown else state.params,
                actual=update.params,
                where=f"update from site '{update.site}'",
            )
        total = float(sum(u.num_examples for u in ordered))
        out: Params = {}
        for name, x in sorted(state.params.items()):
            if name not in shared:
                out[name] = x.copy()
                continue
            acc = np.zeros(x.shape, np.float64)
            for update in ordered:
                value = update.params[name]
                full = x + value if update.kind == UpdateKind.DELTA else value
                acc += np.float64(update.num_examples / total) * full
            out[name] = acc.astype(x.dtype)
        return out

    def aggregate(
        self, rnd: int, state: FedBNState, updates: Sequence[ClientUpdate]
    ) -> tuple[FedBNState, Params]:
        """The new shared weights."""
        new = self.aggregate_updates(rnd, state, updates)
        return FedBNState(params=new), new

    def state_to_record(self, state: FedBNState) -> StateRecord:
        """The shared weights."""
        return StateRecord(tensors=state.params)

    def state_from_record(self, record: StateRecord) -> FedBNState:
        """Rebuild from the shared weights."""
        return FedBNState(params=copy_params(record.tensors))


def build_fedpxn(hparams: Mapping[str, HParamValue], options: ProxOptions) -> FedBN:
    """FedPxN: FedBN plus FedProx's proximal term (``strategy.mu``)."""
    return FedBN(hparams=hparams, mu=options.mu, name="fedpxn")
