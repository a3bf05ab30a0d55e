"""FedNova: normalised averaging, fair to sites that take different numbers of local steps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from flmi.core.errors import ConfigError
from flmi.core.keys import HParam
from flmi.core.messages import HParamValue, UpdateKind
from flmi.core.params import Params
from flmi.strategies.base import (
    ComposedStrategy,
    Contribution,
    NoState,
    Replace,
    as_float64,
    cast_like,
)


class NormalizedAveraging:
    """FedNova's aggregator: average each site's per-step change, then rescale.

    With global weights ``x``, site models ``y_i`` after ``tau_i`` local
    steps and weights ``p_i = n_i / sum n``::

        d_i     = (x - y_i) / tau_i
        tau_eff = sum_i p_i tau_i
        result  = x - tau_eff * sum_i p_i d_i

    For deltas ``D_i = y_i - x`` the result is the delta ``tau_eff * sum_i p_i D_i / tau_i``.
    Linear in the updates, but not translation-equivariant in full weights
    (it needs ``x``), hence the ``reference``.
    """

    def combine(
        self, *, reference: Params, kind: UpdateKind, items: Sequence[Contribution]
    ) -> Params:
        """The normalised average, in the kind of ``items``.

        Raises
        ------
        ValueError
            A site reports fewer than one local step.
        """
        for c in items:
            if c.num_steps < 1:
                raise ValueError(
                    f"fednova: update from site '{c.site}' reports {c.num_steps} local steps; "
                    "FedNova needs num_steps >= 1 to normalise it"
                )
        total = float(sum(c.weight for c in items))
        shares = [c.weight / total for c in items]
        tau_eff = float(sum(p * c.num_steps for p, c in zip(shares, items, strict=True)))
        x = as_float64(reference)
        out: dict[str, np.ndarray] = {}
        for name in sorted(reference):
            acc = np.zeros(reference[name].shape, dtype=np.float64)
            for p, c in zip(shares, items, strict=True):
                change = np.asarray(c.tensors[name], dtype=np.float64)
                if kind is UpdateKind.FULL:
                    change = change - x[name]
                acc += np.float64(p / c.num_steps) * change
            step = tau_eff * acc
            out[name] = x[name] + step if kind is UpdateKind.FULL else step
        return cast_like(out, reference)


class FedNova(ComposedStrategy[NoState]):
    """FedNova: averaging normalised by each site's local steps (Wang et al. 2020).

    Wang, Liu, Liang, Joshi and Poor, "Tackling the Objective Inconsistency
    Problem in Heterogeneous Federated Optimization", NeurIPS 2020. A site
    that takes more local steps moves further; FedAvg would let it pull the
    global model towards its own objective. FedNova divides each site's
    change by its number of local steps ``tau_i`` (:attr:`ClientUpdate.num_steps`),
    averages these per-step changes with weights ``p_i = n_i / sum n`` and
    rescales by ``tau_eff = sum p_i tau_i``:
    ``x <- x - tau_eff * sum_i p_i (x - y_i) / tau_i``.

    It assumes plain SGD local steps (the paper's ``a_i = [1, ..., 1]``, so
    ``||a_i||_1 = tau_i``); local momentum or Adam would need another
    normaliser, which sites do not report. With equal ``tau_i`` it is FedAvg.

    Parameters
    ----------
    hparams
        Local-training settings sent to every site each round.
    """

    def __init__(self, *, hparams: Mapping[str, HParamValue]) -> None:
        optimizer = hparams.get(HParam.OPTIMIZER, "sgd")
        if optimizer != "sgd" or float(hparams.get(HParam.MOMENTUM, 0.0)):
            raise ConfigError(
                "strategy 'fednova' normalises by plain SGD steps: set federation.optimizer = "
                "'sgd' and federation.momentum = 0"
            )
        super().__init__(
            name="fednova", hparams=hparams, aggregator=NormalizedAveraging(), rule=Replace()
        )
