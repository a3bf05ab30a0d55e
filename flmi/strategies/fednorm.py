"""FedNorm: one normalisation branch per modality (or other site group)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from flmi.core.errors import ConfigError
from flmi.core.keys import Extra, HParam, KeepLocal
from flmi.core.messages import ClientUpdate, HParamValue, TrainInstruction, UpdateKind
from flmi.core.params import Params, check_same_schema, copy_params
from flmi.core.strategy import Capabilities, StateRecord


@dataclass(frozen=True)
class FedNormState:
    """Shared weights, and the normalisation tensors of each group."""

    params: Params
    group_norms: Mapping[str, Params]


def _weighted(items: Sequence[tuple[float, np.ndarray]], like: np.ndarray) -> np.ndarray:
    total = float(sum(w for w, _ in items))
    acc = np.zeros(like.shape, np.float64)
    for weight, value in items:
        acc += np.float64(weight / total) * value
    return acc.astype(like.dtype)


def _full(update: ClientUpdate, name: str, x: np.ndarray) -> np.ndarray:
    value = update.params[name]
    return x + value if update.kind == UpdateKind.DELTA else value


class FedNorm:
    """FedNorm: shared layers averaged by all sites, normalisation layers within each group.

    Bernecker et al., "FedNorm: Modality-Based Normalization in Federated
    Learning for Multi-Modal Liver Segmentation", 2022. Sites are grouped by
    modality (``[sites.NAME] group``, e.g. ``"ct"`` and ``"mri"``). Sites send
    their normalisation tensors apart from the other weights; the server
    averages the other weights over every site, as FedAvg, and the
    normalisation tensors over the sites of each group, by examples. Each site
    trains and is scored with the shared weights plus its group's
    normalisation branch. With one group per site it is FedBN with the layers
    held by the server; with a single group it is FedAvg.

    Parameters
    ----------
    hparams
        Local-training settings sent to every site each round.
    groups
        ``{site: group}`` for every site of the federation.
    sites
        Every site's name, to check each has a group (empty: not checked yet).
    """

    def __init__(
        self,
        *,
        hparams: Mapping[str, HParamValue],
        groups: Mapping[str, str],
        sites: Sequence[str] = (),
    ) -> None:
        missing = sorted(set(sites) - set(groups))
        if not groups or missing:
            where = f" (missing for {', '.join(missing)})" if missing else ""
            raise ConfigError(
                "strategy 'fednorm' needs each site's group: set [sites.NAME] group = 'ct' "
                f"(or another modality) for every site{where}"
            )
        self._hparams = {**hparams, HParam.KEEP_LOCAL: KeepLocal.GROUP_NORM.value}
        self._groups = dict(groups)

    @property
    def name(self) -> str:
        """The config name, ``"fednorm"``."""
        return "fednorm"

    @property
    def capabilities(self) -> Capabilities:
        """Personalised, with one model per group (its own normalisation branch)."""
        return Capabilities(personalised=True, site_params=self.site_params)

    def _group(self, site: str) -> str:
        group = self._groups.get(site)
        if group is None:
            raise ConfigError(f"[sites.{site}] group is not set; fednorm needs every site's group")
        return group

    def init(self, params: Params) -> FedNormState:
        """Every group starts from the initial normalisation tensors (inside ``params``)."""
        return FedNormState(params=copy_params(params), group_norms={})

    def site_params(self, state: FedNormState, site: str) -> Params:
        """The shared weights with ``site``'s group branch in place."""
        return {**state.params, **state.group_norms.get(self._group(site), {})}

    def configure(
        self, rnd: int, state: FedNormState, sites: Sequence[str]
    ) -> Mapping[str, TrainInstruction]:
        """Each sampled site gets the shared weights with its group's branch."""
        return {
            site: TrainInstruction(
                rnd=rnd, params=self.site_params(state, site), hparams=self._hparams
            )
            for site in sorted(sites)
        }

    def aggregate_updates(
        self, rnd: int, state: FedNormState, updates: Sequence[ClientUpdate]
    ) -> Params:
        """The new shared weights (the conformance suite's view of the aggregate)."""
        return self.aggregate(rnd, state, updates)[1]

    def aggregate(
        self, rnd: int, state: FedNormState, updates: Sequence[ClientUpdate]
    ) -> tuple[FedNormState, Params]:
        """Shared tensors over all updates; normalisation tensors within each group."""
        if not updates:
            raise ValueError(f"round {rnd}: FedNorm needs at least one update")
        ordered = sorted(updates, key=lambda u: u.site)
        prefix = Extra.NORM.value
        for update in ordered:
            check_same_schema(
                expected={k: v for k, v in state.params.items() if k in update.params},
                actual=update.params,
                where=f"update from site '{update.site}'",
            )
        shared = set.intersection(*(set(u.params) for u in ordered))
        params: Params = {}
        for name, x in sorted(state.params.items()):
            if name not in shared:
                params[name] = x.copy()
                continue
            params[name] = _weighted([(u.num_examples, _full(u, name, x)) for u in ordered], x)
        group_norms = {g: dict(t) for g, t in state.group_norms.items()}
        by_group: dict[str, list[ClientUpdate]] = {}
        for update in ordered:
            by_group.setdefault(self._group(update.site), []).append(update)
        for group, members in sorted(by_group.items()):
            carried = [
                {k[len(prefix) :] for k in u.extras if k.startswith(prefix)} for u in members
            ]
            names = sorted(set.intersection(*carried))
            for name in names:
                like = state.params[name]
                group_norms.setdefault(group, {})[name] = _weighted(
                    [(u.num_examples, u.extras[prefix + name]) for u in members], like
                )
        return FedNormState(params=params, group_norms=group_norms), params

    def state_to_record(self, state: FedNormState) -> StateRecord:
        """Shared weights under ``params/``, group branches under ``group/<g>/``."""
        tensors = {f"params/{k}": v for k, v in state.params.items()}
        for group, norms in state.group_norms.items():
            tensors.update({f"group/{group}/{k}": v for k, v in norms.items()})
        return StateRecord(tensors=tensors, meta={"groups": dict(sorted(self._groups.items()))})

    def state_from_record(self, record: StateRecord) -> FedNormState:
        """Rebuild shared weights and group branches."""
        params = {k[7:]: v.copy() for k, v in record.tensors.items() if k.startswith("params/")}
        groups: dict[str, Params] = {}
        for key, value in record.tensors.items():
            if key.startswith("group/"):
                group, name = key[6:].split("/", 1)
                groups.setdefault(group, {})[name] = value.copy()
        return FedNormState(params=params, group_norms=groups)
