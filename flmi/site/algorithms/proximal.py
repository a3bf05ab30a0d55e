"""FedProx's client side: a proximal term pulls local training toward the global model."""

from __future__ import annotations

from flmi.site.algorithms.base import ClientStep, LocalSite, PassStep, RoundContext
from flmi.site.hooks import proximal_penalty
from flmi.tasks.base import FitHooks


class _ProximalStep(PassStep):
    def __init__(self, *, mu: float) -> None:
        self._mu = mu

    def before_fit(self, site: LocalSite) -> FitHooks | None:
        """``mu / 2 * ||w - w_global||^2``, anchored at the weights just received."""
        return proximal_penalty(model=site.model, mu=self._mu)


class Proximal:
    """Runs when the instruction's ``prox_mu`` is positive (FedProx, FedPxN)."""

    name = "proximal"

    def start(self, context: RoundContext) -> ClientStep | None:
        """A step adding the proximal term, or ``None`` when ``prox_mu`` is 0."""
        if context.training.prox_mu > 0:
            return _ProximalStep(mu=context.training.prox_mu)
        return None
