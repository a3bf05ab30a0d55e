"""SCAFFOLD: control variates correct client drift under heterogeneous data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from flmi.core.errors import ConfigError
from flmi.core.keys import ClientAlgorithm, Extra, HParam
from flmi.core.messages import ClientUpdate, HParamValue, TrainInstruction, UpdateKind
from flmi.core.params import Params, check_same_schema, copy_params
from flmi.core.strategy import StateRecord
from flmi.strategies.options import help_field, positive, require


@dataclass(frozen=True)
class ScaffoldOptions:
    """``[strategy]`` keys of ``scaffold``."""

    server_lr: float = help_field(1.0, "global step size eta_g (> 0)")

    def __post_init__(self) -> None:
        require(positive(self.server_lr), key="server_lr", value=self.server_lr, expected="> 0")


@dataclass(frozen=True)
class ScaffoldState:
    """Global weights ``x`` and the server control variate ``c``."""

    params: Params
    c: Params


class Scaffold:
    """SCAFFOLD, server side.

    Karimireddy et al., "SCAFFOLD: Stochastic Controlled Averaging for
    Federated Learning", ICML 2020. Each instruction carries the server
    variate ``c``; each site corrects every local SGD gradient by
    ``c - c_i``, keeps its own ``c_i`` in its site state (option II update)
    and returns its weights plus ``delta c_i``. The server moves
    ``x <- x + server_lr * sum_i p_i (y_i - x)`` with ``p_i`` the example
    weights, and ``c <- c + (|S| / N) * mean_i delta c_i`` with ``N`` the
    number of sites in the federation. Local training must be plain SGD.

    Parameters
    ----------
    hparams
        Local-training settings (optimizer must be ``sgd`` with momentum 0).
    server_lr
        Global step size ``eta_g`` (1.0 in the paper's experiments).
    num_sites
        ``N``, the number of sites in the federation.
    """

    def __init__(
        self, *, hparams: Mapping[str, HParamValue], server_lr: float, num_sites: int
    ) -> None:
        if hparams.get(HParam.OPTIMIZER, "sgd") != "sgd" or float(
            hparams.get(HParam.MOMENTUM, 0.0)
        ):
            raise ConfigError(
                "strategy 'scaffold' needs plain local SGD: set federation.optimizer = 'sgd' "
                "and federation.momentum = 0"
            )
        if not server_lr > 0:
            raise ConfigError(f"strategy.server_lr must be positive, got {server_lr}")
        if num_sites < 1:
            raise ConfigError(f"scaffold needs at least one site, got {num_sites}")
        self._hparams = {**hparams, HParam.CLIENT_ALGORITHM: ClientAlgorithm.SCAFFOLD.value}
        self._server_lr = server_lr
        self._num_sites = num_sites

    @property
    def name(self) -> str:
        """The config name, ``"scaffold"``."""
        return "scaffold"

    def init(self, params: Params) -> ScaffoldState:
        """Start with ``c = 0``."""
        return ScaffoldState(
            params=copy_params(params), c={k: np.zeros_like(v) for k, v in params.items()}
        )

    def configure(
        self, rnd: int, state: ScaffoldState, sites: Sequence[str]
    ) -> Mapping[str, TrainInstruction]:
        """Send ``x`` and ``c`` to every sampled site."""
        extras = {Extra.SCAFFOLD_C + k: v for k, v in state.c.items()}
        instruction = TrainInstruction(
            rnd=rnd, params=state.params, hparams=self._hparams, extras=extras
        )
        return {site: instruction for site in sorted(sites)}

    def _mean_change(self, state: ScaffoldState, updates: Sequence[ClientUpdate]) -> Params:
        """``sum_i p_i (y_i - x)``, example-weighted, summed in sorted site order (float64)."""
        ordered = sorted(updates, key=lambda u: u.site)
        total = float(sum(u.num_examples for u in ordered))
        for update in ordered:
            where = f"update from site '{update.site}'"
            check_same_schema(expected=state.params, actual=update.params, where=where)
        out: Params = {}
        for name, x in sorted(state.params.items()):
            step = np.zeros(x.shape, np.float64)
            for update in ordered:
                y = update.params[name]
                delta = y if update.kind == UpdateKind.DELTA else y - x
                step += np.float64(update.num_examples / total) * delta
            out[name] = step
        return out

    def aggregate_updates(
        self, rnd: int, state: ScaffoldState, updates: Sequence[ClientUpdate]
    ) -> Params:
        """The example-weighted mean model, before the ``server_lr`` step."""
        if not updates:
            raise ValueError(f"round {rnd}: SCAFFOLD needs at least one update")
        change = self._mean_change(state, updates)
        return {k: (x + change[k]).astype(x.dtype) for k, x in state.params.items()}

    def aggregate(
        self, rnd: int, state: ScaffoldState, updates: Sequence[ClientUpdate]
    ) -> tuple[ScaffoldState, Params]:
        """Move ``x`` by the weighted mean weight change and ``c`` by the mean variate change."""
        if not updates:
            raise ValueError(f"round {rnd}: SCAFFOLD needs at least one update")
        change = self._mean_change(state, updates)
        ordered = sorted(updates, key=lambda u: u.site)
        prefix = Extra.SCAFFOLD_DELTA_C.value
        new_params: Params = {}
        new_c: Params = {}
        for name, x in sorted(state.params.items()):
            new_params[name] = (x + self._server_lr * change[name]).astype(x.dtype)
            dc = np.zeros(x.shape, np.float64)
            for update in ordered:
                if prefix + name in update.extras:
                    dc += update.extras[prefix + name]
            share = len(ordered) / self._num_sites
            new_c[name] = (state.c[name] + share * (dc / len(ordered))).astype(state.c[name].dtype)
        return ScaffoldState(params=new_params, c=new_c), new_params

    def state_to_record(self, state: ScaffoldState) -> StateRecord:
        """Weights and variate as tensors (``params/`` and ``c/`` prefixes)."""
        tensors = {f"params/{k}": v for k, v in state.params.items()}
        tensors.update({f"c/{k}": v for k, v in state.c.items()})
        return StateRecord(tensors=tensors)

    def state_from_record(self, record: StateRecord) -> ScaffoldState:
        """Rebuild from :meth:`state_to_record`'s tensors."""
        params = {k[7:]: v.copy() for k, v in record.tensors.items() if k.startswith("params/")}
        c = {k[2:]: v.copy() for k, v in record.tensors.items() if k.startswith("c/")}
        return ScaffoldState(params=params, c=c)
