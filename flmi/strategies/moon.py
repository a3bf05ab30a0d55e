"""MOON: FedAvg whose sites add a model-contrastive term to their local loss."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from flmi.core.keys import ClientAlgorithm, HParam
from flmi.core.messages import HParamValue
from flmi.strategies.base import ComposedStrategy, NoState, Replace, WeightedMean
from flmi.strategies.options import help_field, require


@dataclass(frozen=True)
class MoonOptions:
    """``[strategy]`` keys of ``moon``."""

    mu: float = help_field(1.0, "weight mu of the model-contrastive loss (>= 0)")
    temperature: float = help_field(0.5, "temperature tau of the contrastive loss (> 0)")

    def __post_init__(self) -> None:
        require(math.isfinite(self.mu) and self.mu >= 0, key="mu", value=self.mu, expected=">= 0")
        require(
            math.isfinite(self.temperature) and self.temperature > 0,
            key="temperature",
            value=self.temperature,
            expected="> 0",
        )


class Moon(ComposedStrategy[NoState]):
    """MOON: model-contrastive federated learning.

    Li, He and Song, "Model-Contrastive Federated Learning", CVPR 2021. The
    server side is FedAvg's example-weighted mean; the instruction names
    ``client_algorithm = "moon"`` with ``moon_mu`` and ``moon_temperature``,
    and each site adds ``mu`` times a contrastive loss that pulls the
    representation of its local model toward the global model's and away from
    its own previous local model's (:mod:`flmi.site.algorithms.moon`; the
    previous model stays in the site's state).

    Parameters
    ----------
    hparams
        Local-training settings sent to every site each round.
    options
        ``mu`` and ``temperature``.
    """

    def __init__(self, *, hparams: Mapping[str, HParamValue], options: MoonOptions) -> None:
        super().__init__(
            name="moon",
            hparams={
                **hparams,
                HParam.CLIENT_ALGORITHM: ClientAlgorithm.MOON.value,
                HParam.MOON_MU: options.mu,
                HParam.MOON_TEMPERATURE: options.temperature,
            },
            aggregator=WeightedMean(),
            rule=Replace(),
        )
