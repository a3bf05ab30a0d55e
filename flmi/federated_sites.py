"""The federated arm's sites, built the same way in every process that hosts them.

The in-process simulation builds all of them from the data it loaded; a
runtime whose workers host sites (Ray) hands each worker a
:class:`SiteRecipe` and the names it owns, and the worker loads the data and
builds those sites itself (:func:`sites_from_recipe`), so no site's data
passes through the driver.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from flmi.config import Config
from flmi.data.arrays import FederatedData
from flmi.data.sources import load_data
from flmi.data.unlabeled import semi_supervised_data
from flmi.privacy.noise_source import NoiseSource
from flmi.privacy.setup import protect_sites
from flmi.report.rundir import RunDir
from flmi.runtime.inprocess import SiteEndpoint
from flmi.site.faults import Fault, FaultySite, flip_labels
from flmi.site.site import Site, SitePolicy
from flmi.tasks.base import Task
from flmi.tasks.device import resolve_device
from flmi.tasks.registry import build_task, check_task
from flmi.wiring import fault_of


@dataclass(frozen=True)
class SiteRecipe:
    """What a worker process needs to build the federated arm's sites itself.

    Parameters
    ----------
    config
        The run's validated configuration.
    run_path
        The run directory (sites keep their state under it); ``None`` keeps
        site state in memory only.
    resume_round
        The last checkpointed round when resuming, else ``None``.
    task
        The task object given to the run instead of ``[task] name``, else ``None``.
    """

    config: Config
    run_path: Path | None
    resume_round: int | None
    task: Task | None


def federated_sites(
    *,
    config: Config,
    data: FederatedData,
    task: Task,
    device: torch.device,
    workspace: torch.nn.Module,
    policy: SitePolicy,
    noise: NoiseSource,
    run_path: Path | None,
    resume_round: int | None,
    names: Collection[str] | None = None,
) -> list[SiteEndpoint]:
    """The federated arm's sites with the configured faults (baselines stay honest).

    Each keeps its site state in the run directory, so a resumed run picks
    it up as of round ``resume_round``. ``names`` keeps only those sites
    (default: every site of ``data``).
    """
    seed = config.federation.seed
    run = RunDir(path=run_path) if run_path is not None else None
    endpoints: list[SiteEndpoint] = []
    for name, splits in sorted(data.sites.items()):
        if names is not None and name not in names:
            continue
        spec = fault_of(config, name)
        if spec.kind == Fault.LABEL_FLIP:
            splits = flip_labels(splits, num_classes=config.task.num_classes)
        site = Site(
            name=name,
            data=splits,
            task=task,
            seed=seed,
            device=device,
            model=workspace,
            policy=policy,
            state_dir=run.site_dir(name) if run is not None else None,
            resume_round=resume_round,
            noise=noise,
        )
        faulty = spec.kind not in (Fault.NONE, Fault.LABEL_FLIP)
        endpoints.append(FaultySite(site=site, fault=spec, seed=seed) if faulty else site)
    return protect_sites(config.privacy, endpoints, federation=config.federation)


def configured_sites(
    *,
    config: Config,
    data: FederatedData,
    task: Task,
    device: torch.device,
    run_path: Path | None,
    resume_round: int | None,
    names: Collection[str],
) -> list[SiteEndpoint]:
    """:func:`federated_sites` with the config's own workspace model, policy and noise source."""
    seed = config.federation.seed
    return federated_sites(
        config=config,
        data=data,
        task=task,
        device=device,
        workspace=task.build_model(seed=seed).to(device),
        policy=SitePolicy(min_count=config.report.min_count),
        noise=NoiseSource.for_run(
            insecure_reproducible=config.privacy.insecure_reproducible_noise, seed=seed
        ),
        run_path=run_path,
        resume_round=resume_round,
        names=names,
    )


def sites_from_recipe(recipe: SiteRecipe, *, names: Sequence[str]) -> list[SiteEndpoint]:
    """Load the data and build the sites ``names`` as the simulation does, in this process.

    The same seeds, thread count, task and site code give the same numbers
    as the sites the simulation builds in its own process.
    """
    config = recipe.config
    torch.set_num_threads(config.runtime.torch_threads)
    device = resolve_device(config.runtime.device)
    data, _ = semi_supervised_data(config, load_data(config))
    missing = sorted(set(names) - set(data.sites))
    if missing:
        raise ValueError(f"the data holds no site named {', '.join(missing)}")
    if recipe.task is None:
        task = build_task(config, data)
    else:
        task = recipe.task
        check_task(task, data)
    return configured_sites(
        config=config,
        data=data,
        task=task,
        device=device,
        run_path=recipe.run_path,
        resume_round=recipe.resume_round,
        names=names,
    )
