"""``equal_weight``: FedAvg in which every site counts the same, whatever its size."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flmi import StrategySpec
from flmi.core.keys import HParam
from flmi.core.messages import HParamValue, UpdateKind
from flmi.core.params import Params, weighted_mean
from flmi.core.strategy import Strategy
from flmi.strategies.base import ComposedStrategy, Contribution, Replace
from flmi.strategies.options import help_field, options_of, require
from flmi.strategies.spec import BuildContext
from flmi_example_plugin.clip import MAX_NORM as CLIP_MAX_NORM
from flmi_example_plugin.clip import NAME as CLIP_NAME


class EqualMean:
    """The unweighted mean of the sites' contributions, summed in sorted site order."""

    def combine(
        self, *, reference: Params, kind: UpdateKind, items: Sequence[Contribution]
    ) -> Params:
        """``sum_i t_i / n_sites``: each site weighs 1."""
        return weighted_mean([(c.site, 1.0, c.tensors) for c in items])


@dataclass(frozen=True)
class EqualWeightOptions:
    """``[strategy]`` keys of ``equal_weight``."""

    min_sites_per_round: int = help_field(1, "fewest updates a round aggregates (>= 1)")
    clip_grad_norm: float = help_field(
        0.0, "> 0: the sites clip each local gradient to this norm (client algorithm clip_grad)"
    )

    def __post_init__(self) -> None:
        require(
            self.min_sites_per_round >= 1,
            key="min_sites_per_round",
            value=self.min_sites_per_round,
            expected=">= 1",
        )
        require(
            self.clip_grad_norm >= 0,
            key="clip_grad_norm",
            value=self.clip_grad_norm,
            expected=">= 0 (0: no clipping)",
        )


def build(
    hparams: Mapping[str, HParamValue], options: Mapping[str, Any], _context: BuildContext
) -> Strategy[Any]:
    """The strategy, from the local-training settings and the checked options."""
    checked = EqualWeightOptions(**options)
    sent = dict(hparams)
    if checked.clip_grad_norm > 0:  # the sites' clip_grad algorithm, with its own setting
        sent.update({HParam.CLIENT_ALGORITHM: CLIP_NAME, CLIP_MAX_NORM: checked.clip_grad_norm})
    return ComposedStrategy(
        name="equal_weight", hparams=sent, aggregator=EqualMean(), rule=Replace()
    )


EQUAL_WEIGHT = StrategySpec(
    summary="equal_weight: FedAvg with every site weighted the same (example plug-in)",
    options=options_of(EqualWeightOptions),
    build=build,
    linear=True,
    min_updates=lambda o: int(o["min_sites_per_round"]),
)
