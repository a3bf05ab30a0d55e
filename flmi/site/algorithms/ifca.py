"""IFCA's client side: train the cluster model with the lowest loss on the site's data."""

from __future__ import annotations

from flmi.core.errors import SchemaError
from flmi.core.keys import ClientAlgorithm, Extra
from flmi.core.params import Params
from flmi.site.algorithms.base import ClientStep, LocalSite, LocalUpdate, PassStep, RoundContext
from flmi.strategies.ifca import CLUSTER_METRIC
from flmi.tasks.base import FitHooks, FitResult


def cluster_models(extras: Params) -> dict[int, Params]:
    """``{cluster: model}`` from an IFCA instruction's extras (``cluster/<j>/<name>``)."""
    models: dict[int, Params] = {}
    for key, value in extras.items():
        if key.startswith(Extra.CLUSTER):
            label, name = key[len(Extra.CLUSTER) :].split("/", 1)
            models.setdefault(int(label), {})[name] = value
    return models


class _ClusterStep(PassStep):
    def __init__(self, *, models: dict[int, Params]) -> None:
        self._models = models
        self._chosen: int | None = None

    def before_fit(self, site: LocalSite) -> FitHooks | None:
        """Load every cluster model, keep the one with the lowest training loss loaded."""
        if not self._models:
            raise SchemaError("IFCA instruction carries no cluster models")
        losses: dict[int, float] = {}
        for index, params in sorted(self._models.items()):
            site.load(params, where=f"IFCA cluster model {index}")
            losses[index] = site.train_loss()
        chosen = min(sorted(losses), key=lambda j: losses[j])
        site.load(self._models[chosen], where=f"IFCA cluster model {chosen}")
        self._chosen = chosen
        return None

    def after_fit(self, site: LocalSite, update: LocalUpdate, result: FitResult) -> LocalUpdate:
        """Report the chosen cluster (metric ``cluster``)."""
        if self._chosen is None:
            raise RuntimeError("IFCA's step finished before it chose a cluster")
        return update.with_metrics({CLUSTER_METRIC: self._chosen})


class Ifca:
    """Runs when ``client_algorithm = "ifca"``.

    Ghosh et al., "An Efficient Framework for Clustered Federated Learning",
    NeurIPS 2020.
    """

    name = ClientAlgorithm.IFCA.value

    def start(self, context: RoundContext) -> ClientStep | None:
        """A step that chooses among the instruction's cluster models."""
        if context.training.client_algorithm != self.name:
            return None
        return _ClusterStep(models=cluster_models(context.instruction.extras))
