"""FedAvg followed by local fine-tuning at every site."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from flmi.core.keys import HParam
from flmi.core.messages import HParamValue
from flmi.core.strategy import Capabilities
from flmi.strategies.base import ComposedStrategy, NoState, Replace, WeightedMean
from flmi.strategies.options import help_field, require


@dataclass(frozen=True)
class FinetuneOptions:
    """``[strategy]`` keys of ``finetune``."""

    finetune_epochs: int = help_field(
        1, "local epochs each site fine-tunes before it scores (>= 1)"
    )

    def __post_init__(self) -> None:
        require(
            self.finetune_epochs >= 1,
            key="finetune_epochs",
            value=self.finetune_epochs,
            expected=">= 1",
        )


class FineTune(ComposedStrategy[NoState]):
    """FedAvg, then local fine-tuning: each site adapts the federated model to itself.

    The common personalisation baseline (e.g. Wang et al., "Federated
    Evaluation of On-device Personalization", 2019; FLamby's FedAvg-FT). The
    federation is FedAvg; whenever the model is scored, each site first
    fine-tunes a copy of it for ``finetune_epochs`` local epochs on its own
    training split (seeded per site and round, the same settings as local
    training) and scores that copy on its own validation or test split. The
    fine-tuned copies never leave the sites and never enter the federation.

    Parameters
    ----------
    hparams
        Local-training settings (also used for fine-tuning).
    options
        ``finetune_epochs``.
    """

    def __init__(self, *, hparams: Mapping[str, HParamValue], options: FinetuneOptions) -> None:
        super().__init__(
            name="finetune", hparams=hparams, aggregator=WeightedMean(), rule=Replace()
        )
        self._evaluation = {**hparams, HParam.FINETUNE_EPOCHS: options.finetune_epochs}

    @property
    def capabilities(self) -> Capabilities:
        """Personalised (sites score fine-tuned copies), with the fine-tuning settings."""
        return Capabilities(personalised=True, evaluation_hparams=dict(self._evaluation))
