"""Ditto: a global model by FedAvg, and a personal model at every site."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from flmi.core.keys import HParam, Personal
from flmi.core.messages import HParamValue
from flmi.core.strategy import Capabilities
from flmi.strategies.base import ComposedStrategy, NoState, Replace, WeightedMean
from flmi.strategies.options import help_field, require


@dataclass(frozen=True)
class DittoOptions:
    """``[strategy]`` keys of ``ditto``."""

    ditto_lambda: float = help_field(
        0.1, "pull of each personal model toward the global one (>= 0)"
    )

    def __post_init__(self) -> None:
        require(
            math.isfinite(self.ditto_lambda) and self.ditto_lambda >= 0,
            key="ditto_lambda",
            value=self.ditto_lambda,
            expected=">= 0",
        )


class Ditto(ComposedStrategy[NoState]):
    """Ditto: FedAvg for the global model plus a regularised personal model per site.

    Li et al., "Ditto: Fair and Robust Federated Learning Through
    Personalization", ICML 2021. Each round a site trains the global model as
    in FedAvg and sends it; it then trains its own personal model ``v`` on the
    same data with the penalty ``lambda / 2 * ||v - w_global||^2`` and keeps
    ``v`` in its site state: it never leaves the site. Each site is scored with
    its personal model on its own test split. ``lambda = 0`` is local training
    of the personal model; large ``lambda`` pulls it onto the global model.

    Parameters
    ----------
    hparams
        Local-training settings (used for both models).
    options
        ``ditto_lambda``.
    """

    def __init__(self, *, hparams: Mapping[str, HParamValue], options: DittoOptions) -> None:
        super().__init__(
            name="ditto",
            hparams={
                **hparams,
                HParam.PERSONAL: Personal.DITTO.value,
                HParam.DITTO_LAMBDA: options.ditto_lambda,
            },
            aggregator=WeightedMean(),
            rule=Replace(),
        )

    @property
    def capabilities(self) -> Capabilities:
        """Personalised: each site is scored with its personal model."""
        return Capabilities(personalised=True)
