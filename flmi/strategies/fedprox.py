"""FedProx: FedAvg whose sites add a proximal term to their local loss."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from flmi.core.keys import HParam
from flmi.core.messages import HParamValue
from flmi.strategies.base import ComposedStrategy, NoState, Replace, WeightedMean
from flmi.strategies.options import help_field, require


@dataclass(frozen=True)
class ProxOptions:
    """``[strategy]`` keys of ``fedprox`` and ``fedpxn``."""

    mu: float = help_field(0.01, "proximal coefficient mu (>= 0)")

    def __post_init__(self) -> None:
        require(math.isfinite(self.mu) and self.mu >= 0, key="mu", value=self.mu, expected=">= 0")


class FedProx(ComposedStrategy[NoState]):
    """FedProx: each site minimises its loss plus ``mu / 2 * ||w - w_global||^2``.

    Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020.
    The server side is FedAvg's example-weighted mean; the instruction carries
    ``prox_mu`` and the site adds the proximal term to every batch's loss
    (:func:`flmi.site.hooks.proximal_penalty`), which limits how far local
    training drifts from the global model on heterogeneous sites.

    Parameters
    ----------
    hparams
        Local-training settings sent to every site each round.
    options
        ``mu``.
    """

    def __init__(self, *, hparams: Mapping[str, HParamValue], options: ProxOptions) -> None:
        super().__init__(
            name="fedprox",
            hparams={**hparams, HParam.PROX_MU: options.mu},
            aggregator=WeightedMean(),
            rule=Replace(),
        )
