"""The pieces ``flmi run`` and ``flmi server`` build the same way from a config.

The server's strategy, its ``[sites.NAME]`` overrides, the final model's
sidecar, each site's simulated fault and every arm's starting model. Kept
apart from :mod:`flmi.simulation` so that the server never loads the
simulator.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from flmi.config import Config, site_groups, training_hparams
from flmi.core.errors import ConfigError
from flmi.core.keys import HParam
from flmi.core.messages import HParamValue
from flmi.core.strategy import Strategy, capabilities_of
from flmi.privacy.strategies import with_privacy
from flmi.site.faults import Fault, FaultSpec
from flmi.strategies.per_site import PerSiteSettings
from flmi.strategies.registry import BuildContext, build_strategy
from flmi.strategies.unlabeled_added import UnlabeledAdded
from flmi.strategies.unlabeled_weight import UnlabeledWeight
from flmi.tasks.base import Task
from flmi.tasks.transfer import frozen_names, load_init_weights


def make_strategy(
    config: Config, site_names: Sequence[str], *, base: Strategy[Any] | None = None
) -> Strategy[Any]:
    """The configured strategy for ``site_names``: ``[sites.NAME]`` overrides, then DP.

    The one place the server's strategy is built, for ``flmi run`` and ``flmi server``.
    ``base`` replaces the strategy ``[strategy] name`` selects (a strategy
    object passed to :func:`flmi.simulation.run_experiment`); the same wrappers go around it.
    """
    strategy = (
        base
        if base is not None
        else build_strategy(
            name=config.strategy.name,
            hparams=training_hparams(config),
            options=config.strategy.options,
            context=BuildContext(
                num_sites=len(site_names),
                seed=config.federation.seed,
                site_groups=site_groups(config),
                site_names=tuple(sorted(site_names)),
            ),
        )
    )
    # Sites left out (unlabeled sites without semi-supervised training) get no overrides.
    overrides = {s: v for s, v in site_overrides(config).items() if s in site_names}
    if overrides:
        strategy = PerSiteSettings(inner=strategy, overrides=overrides)
    f, n = config.federation, len(site_names)
    added = f.unlabeled_aggregation == "add" and f.semi_supervised != "none"
    if f.unlabeled_weight < 1.0 or added:
        if not capabilities_of(strategy).one_global_model:
            key = "unlabeled_aggregation = 'add'" if added else "unlabeled_weight"
            raise ConfigError(
                f"federation.{key} applies to strategies with one global model; "
                f"'{strategy.name}' keeps models per site: leave unlabeled_weight at 1 "
                "and unlabeled_aggregation at 'mean'"
            )
        if added:
            strategy = UnlabeledAdded(inner=strategy, weight=f.unlabeled_weight)
        else:
            strategy = UnlabeledWeight(inner=strategy, weight=f.unlabeled_weight)
    return with_privacy(
        strategy,
        privacy=config.privacy,
        rounds=f.rounds,
        sites_per_round=min(n, max(f.min_sites, math.ceil(f.fraction * n))),
        seed=f.seed,
    )


def site_overrides(config: Config) -> dict[str, dict[str, HParamValue]]:
    """``[sites.NAME]`` local-training overrides, as instruction hyperparameters."""
    keys = {
        "local_epochs": HParam.LOCAL_EPOCHS,
        "local_steps": HParam.LOCAL_STEPS,
        "lr": HParam.LR,
        "batch_size": HParam.BATCH_SIZE,
    }
    out: dict[str, dict[str, HParamValue]] = {}
    for name, site in sorted(config.sites.items()):
        values = {hp.value: getattr(site, key) for key, hp in keys.items()}
        chosen = {k: v for k, v in values.items() if v is not None}
        if chosen:
            out[name] = chosen
    return out


def model_meta(config: Config, task: Task, strategy: str) -> dict[str, Any]:
    """The final model's sidecar: what a reader needs to rebuild and use it."""
    return {
        "task": dataclasses.asdict(config.task),
        "in_channels": task.in_channels,
        "spatial_dims": task.spatial_dims,
        "rounds": config.federation.rounds,
        "strategy": strategy,
        "seed": config.federation.seed,
    }


def fault_of(config: Config, site: str) -> FaultSpec:
    """The simulated fault configured for ``site`` (none by default)."""
    table = config.sites.get(site)
    if table is None:
        return FaultSpec()
    return FaultSpec(
        kind=Fault(table.fault), scale=table.fault_scale, noise_std=table.fault_noise_std
    )


def initial_model(config: Config, task: Task, *, seed: int) -> torch.nn.Module:
    """The starting model of every arm: seeded, then ``[task] init_weights`` when set.

    ``[task] freeze`` is checked against it here, before anything runs.
    """
    model = task.build_model(seed=seed)
    t = config.task
    if t.init_weights:
        load_init_weights(model=model, path=Path(t.init_weights), skip=t.init_skip)
    frozen_names(model=model, prefixes=t.freeze)
    return model
