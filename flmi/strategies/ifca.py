"""IFCA: k cluster models; each site trains the one that fits its data best."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from flmi.core.keys import ClientAlgorithm, Extra, HParam
from flmi.core.messages import ClientUpdate, HParamValue, TrainInstruction, UpdateKind
from flmi.core.params import Params, check_same_schema, copy_params
from flmi.core.rng import generator
from flmi.core.strategy import Capabilities, StateRecord
from flmi.strategies.options import help_field, positive, require

CLUSTER_METRIC = "cluster"


@dataclass(frozen=True)
class IfcaOptions:
    """``[strategy]`` keys of ``ifca``."""

    num_clusters: int = help_field(2, "number of cluster models k (>= 1)")
    init_spread: float = help_field(
        0.1, "relative size of the seeded perturbation that makes the k starting models differ"
    )

    def __post_init__(self) -> None:
        require(
            self.num_clusters >= 1, key="num_clusters", value=self.num_clusters, expected=">= 1"
        )
        require(
            positive(self.init_spread), key="init_spread", value=self.init_spread, expected="> 0"
        )


@dataclass(frozen=True)
class IfcaState:
    """The k cluster models and each site's last chosen cluster."""

    models: tuple[Params, ...]
    membership: Mapping[str, int]


def cluster_key(cluster: int, name: str) -> str:
    """The extras key of tensor ``name`` of cluster model ``cluster``."""
    return f"{Extra.CLUSTER}{cluster}/{name}"


class Ifca:
    """IFCA: iterative federated clustering.

    Ghosh et al., "An Efficient Framework for Clustered Federated Learning",
    NeurIPS 2020. The server keeps ``k`` models and sends all of them; each
    sampled site computes every model's loss on its own training data, trains
    the one with the lowest loss and reports which it chose. The server
    averages, by examples, the updates of each cluster separately; a cluster
    no site chose keeps its model. Cluster membership is recorded every round
    (``metrics.jsonl``, key ``strategy``), and each site is scored with its
    cluster's model. The ``k`` starting models are the initial weights times
    ``1 + init_spread * N(0, 1)`` noise, seeded (model 0 unperturbed).

    Parameters
    ----------
    hparams
        Local-training settings.
    options
        ``num_clusters`` and ``init_spread``.
    seed
        Seed of the starting perturbations.
    """

    def __init__(
        self, *, hparams: Mapping[str, HParamValue], options: IfcaOptions, seed: int
    ) -> None:
        self._hparams = {**hparams, HParam.CLIENT_ALGORITHM: ClientAlgorithm.IFCA.value}
        self._k = options.num_clusters
        self._spread = options.init_spread
        self._seed = seed

    @property
    def name(self) -> str:
        """The config name, ``"ifca"``."""
        return "ifca"

    @property
    def capabilities(self) -> Capabilities:
        """Personalised (no single model to score centrally), one model per cluster."""
        return Capabilities(personalised=True, site_params=self.site_params)

    def init(self, params: Params) -> IfcaState:
        """Model 0 is the initial weights; the others are seeded perturbations of them."""
        models = [copy_params(params)]
        for j in range(1, self._k):
            rng = generator(seed=self._seed, party="server", rnd=0, purpose=f"ifca-{j}")
            models.append(
                {
                    k: (v * (1 + self._spread * rng.standard_normal(v.shape))).astype(v.dtype)
                    for k, v in sorted(params.items())
                }
            )
        return IfcaState(models=tuple(models), membership={})

    def site_params(self, state: IfcaState, site: str) -> Params:
        """The model of the cluster ``site`` last chose (cluster 0 before it chose)."""
        return state.models[state.membership.get(site, 0)]

    def configure(
        self, rnd: int, state: IfcaState, sites: Sequence[str]
    ) -> Mapping[str, TrainInstruction]:
        """Every cluster model to every sampled site (model 0 also as ``params``)."""
        extras = {cluster_key(j, k): v for j, m in enumerate(state.models) for k, v in m.items()}
        instruction = TrainInstruction(
            rnd=rnd, params=state.models[0], hparams=self._hparams, extras=extras
        )
        return {site: instruction for site in sorted(sites)}

    def _chosen(self, update: ClientUpdate) -> int:
        value = update.metrics.get(CLUSTER_METRIC)
        if value is None or not float(value).is_integer() or not 0 <= int(value) < self._k:
            raise ValueError(
                f"update from site '{update.site}' names no valid cluster "
                f"(metric '{CLUSTER_METRIC}' = {value!r}, expected 0..{self._k - 1})"
            )
        return int(value)

    def aggregate(
        self, rnd: int, state: IfcaState, updates: Sequence[ClientUpdate]
    ) -> tuple[IfcaState, Params]:
        """Average each cluster's updates by examples; return the most-chosen cluster's model."""
        ordered = sorted(updates, key=lambda u: u.site)
        membership = dict(state.membership)
        groups: dict[int, list[ClientUpdate]] = {}
        for update in ordered:
            j = self._chosen(update)
            check_same_schema(
                expected=state.models[j],
                actual=update.params,
                where=f"update from site '{update.site}'",
            )
            groups.setdefault(j, []).append(update)
            membership[update.site] = j
        models = list(state.models)
        for j, members in sorted(groups.items()):
            total = float(sum(u.num_examples for u in members))
            new: Params = {}
            for name, x in sorted(models[j].items()):
                acc = np.zeros(x.shape, np.float64)
                for u in members:
                    full = x + u.params[name] if u.kind == UpdateKind.DELTA else u.params[name]
                    acc += np.float64(u.num_examples / total) * full
                new[name] = acc.astype(x.dtype)
            models[j] = new
        sizes = {j: sum(u.num_examples for u in m) for j, m in groups.items()}
        biggest = max(sorted(sizes), key=lambda j: sizes[j]) if sizes else 0
        new_state = IfcaState(models=tuple(models), membership=membership)
        return new_state, models[biggest]

    def state_to_record(self, state: IfcaState) -> StateRecord:
        """Cluster models as tensors; membership as JSON (recorded every round)."""
        tensors = {cluster_key(j, k): v for j, m in enumerate(state.models) for k, v in m.items()}
        return StateRecord(
            tensors=tensors,
            meta={"membership": dict(sorted(state.membership.items())), "num_clusters": self._k},
        )

    def state_from_record(self, record: StateRecord) -> IfcaState:
        """Rebuild the cluster models and membership."""
        models: list[Params] = [{} for _ in range(self._k)]
        for key, value in record.tensors.items():
            j, name = key[len(Extra.CLUSTER) :].split("/", 1)
            models[int(j)][name] = value.copy()
        raw = record.meta.get("membership", {})
        membership = {str(k): int(str(v)) for k, v in raw.items()} if isinstance(raw, dict) else {}
        return IfcaState(models=tuple(models), membership=membership)
