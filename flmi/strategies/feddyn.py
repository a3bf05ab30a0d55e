"""FedDyn: dynamic regularisation makes the sites' local optima agree with the global one."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from flmi.core.errors import ConfigError
from flmi.core.keys import ClientAlgorithm, HParam
from flmi.core.messages import ClientUpdate, HParamValue, TrainInstruction, UpdateKind
from flmi.core.params import Params, copy_params
from flmi.core.strategy import StateRecord
from flmi.strategies.base import contributions
from flmi.strategies.options import help_field, require

PARAMS_SLOT = "params/"
H_SLOT = "h/"


@dataclass(frozen=True)
class FedDynOptions:
    """``[strategy]`` keys of ``feddyn``."""

    alpha: float = help_field(0.01, "regularisation coefficient alpha (> 0)")

    def __post_init__(self) -> None:
        require(
            math.isfinite(self.alpha) and self.alpha > 0,
            key="alpha",
            value=self.alpha,
            expected="> 0",
        )


@dataclass(frozen=True)
class FedDynState:
    """Global weights and the server's state ``h`` (a running sum of weight changes)."""

    params: Params
    h: Params


class FedDyn:
    """FedDyn, server side.

    Acar et al., "Federated Learning Based on Dynamic Regularization", ICLR
    2021, Algorithm 1. Each site ``i`` minimises its loss plus
    ``-<g_i, w> + alpha / 2 * ||w - w_global||^2`` with its own gradient term
    ``g_i`` kept in its site state (:mod:`flmi.site.algorithms.feddyn`) and
    sends its weights ``w_i``. With ``P`` the sites that answered and ``m``
    the sites of the federation, the server moves

    ``h <- h - alpha * (1 / m) * sum_{i in P} (w_i - w)``

    ``w <- (1 / |P|) * sum_{i in P} w_i - h / alpha``

    The mean is unweighted, as in the paper; summed in sorted site order in
    float64. Delta updates ``d_i = w_i - w`` enter as ``w + d_i``.

    Parameters
    ----------
    hparams
        Local-training settings sent to every site each round.
    options
        ``alpha``.
    num_sites
        ``m``, the number of sites in the federation.
    """

    def __init__(
        self, *, hparams: Mapping[str, HParamValue], options: FedDynOptions, num_sites: int
    ) -> None:
        if num_sites < 1:
            raise ConfigError(f"feddyn needs at least one site, got {num_sites}")
        self._alpha = options.alpha
        self._num_sites = num_sites
        self._hparams = {
            **hparams,
            HParam.CLIENT_ALGORITHM: ClientAlgorithm.FEDDYN.value,
            HParam.FEDDYN_ALPHA: options.alpha,
        }

    @property
    def name(self) -> str:
        """The config name, ``"feddyn"``."""
        return "feddyn"

    def init(self, params: Params) -> FedDynState:
        """Start with ``h = 0``."""
        return FedDynState(
            params=copy_params(params), h={k: np.zeros_like(v) for k, v in params.items()}
        )

    def configure(
        self, rnd: int, state: FedDynState, sites: Sequence[str]
    ) -> Mapping[str, TrainInstruction]:
        """Send the global weights and ``alpha`` to every sampled site."""
        instruction = TrainInstruction(rnd=rnd, params=state.params, hparams=self._hparams)
        return {site: instruction for site in sorted(sites)}

    def _mean(self, rnd: int, state: FedDynState, updates: Sequence[ClientUpdate]) -> Params:
        """``(1 / |P|) sum_i w_i`` in float64, sites in sorted order."""
        kind, items = contributions(rnd, self.name, state.params, updates)
        out: Params = {}
        for name, x in sorted(state.params.items()):
            total = np.zeros(x.shape, np.float64)
            for item in items:
                total += np.asarray(item.tensors[name], dtype=np.float64)
            mean = total / len(items)
            out[name] = mean + x if kind is UpdateKind.DELTA else mean
        return out

    def aggregate_updates(
        self, rnd: int, state: FedDynState, updates: Sequence[ClientUpdate]
    ) -> Params:
        """The unweighted mean of the sites' weights, before the ``h / alpha`` correction."""
        mean = self._mean(rnd, state, updates)
        return {k: mean[k].astype(x.dtype) for k, x in sorted(state.params.items())}

    def aggregate(
        self, rnd: int, state: FedDynState, updates: Sequence[ClientUpdate]
    ) -> tuple[FedDynState, Params]:
        """Update ``h`` with the participating share, then ``w = mean - h / alpha``."""
        mean = self._mean(rnd, state, updates)
        share = len(updates) / self._num_sites
        new_h: Params = {}
        new_params: Params = {}
        for name, x in sorted(state.params.items()):
            x64 = np.asarray(x, dtype=np.float64)
            h = np.asarray(state.h[name], dtype=np.float64) - self._alpha * share * (
                mean[name] - x64
            )
            new_h[name] = h.astype(state.h[name].dtype)
            new_params[name] = (mean[name] - h / self._alpha).astype(x.dtype)
        return FedDynState(params=new_params, h=new_h), new_params

    def state_to_record(self, state: FedDynState) -> StateRecord:
        """Weights and ``h`` as tensors (``params/`` and ``h/`` prefixes)."""
        tensors = {PARAMS_SLOT + k: v for k, v in sorted(state.params.items())}
        tensors.update({H_SLOT + k: v for k, v in sorted(state.h.items())})
        return StateRecord(tensors=tensors, meta={"strategy": self.name})

    def state_from_record(self, record: StateRecord) -> FedDynState:
        """Rebuild from :meth:`state_to_record`'s tensors."""
        params = {
            k[len(PARAMS_SLOT) :]: v.copy()
            for k, v in record.tensors.items()
            if k.startswith(PARAMS_SLOT)
        }
        h = {k[len(H_SLOT) :]: v.copy() for k, v in record.tensors.items() if k.startswith(H_SLOT)}
        if set(h) != set(params):
            raise ValueError("FedDyn state record: 'h' and 'params' name different tensors")
        return FedDynState(params=params, h=h)
