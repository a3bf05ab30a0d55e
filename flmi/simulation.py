"""A whole federation on one machine: data, sites, arms, run directory.

This wires the pieces together; the federation loop itself lives in
:func:`flmi.core.federation.run_federation` and the site code path in
:class:`flmi.site.site.Site`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from flmi.config import (
    Config,
    check_site_names,
    site_groups,
    training_hparams,
)
from flmi.core.federation import (
    FederationPlan,
    FederationResult,
    RoundRecord,
    evaluate_strategy_sites,
    is_personalised,
    mean_metrics,
    run_federation,
)
from flmi.core.keys import Arm, HParam, Record, Split
from flmi.core.messages import HParamValue
from flmi.core.params import Params
from flmi.core.strategy import StateRecord, Strategy
from flmi.data.arrays import ArraySplit, FederatedData, SiteSplits, concat_splits
from flmi.data.sources import load_data
from flmi.report.resume import open_run, record_from_line
from flmi.report.rundir import RunDir
from flmi.report.summary import ArmResult, arm_json, sites_json, versions
from flmi.runtime.inprocess import InProcessRuntime, SiteEndpoint
from flmi.site.faults import Fault, FaultSpec, FaultySite, flip_labels
from flmi.site.site import Site
from flmi.strategies.fedavg import FedAvg
from flmi.strategies.per_site import PerSiteSettings
from flmi.strategies.registry import BuildContext, build_strategy
from flmi.tasks.classification import ClassificationTask
from flmi.tasks.device import resolve_device
from flmi.tasks.image_tasks import (
    check_densenet_images,
    densenet_settings,
    multilabel_task,
    segmentation_task,
)
from flmi.tasks.multilabel import MultiLabelTask
from flmi.tasks.segmentation import SegmentationTask
from flmi.tasks.torch_params import load_params, params_copy

ProgressFn = Callable[[RoundRecord, int], None]
ImageTask = ClassificationTask | SegmentationTask | MultiLabelTask


def build_task(config: Config, data: FederatedData) -> ImageTask:
    """The task, shaped by the data (channels and 2D/3D), with every label checked."""
    x = data.central_test.x
    task: ImageTask
    if config.task.name == "segmentation":
        task = segmentation_task(config, data)
    elif config.task.multi_label:
        task = multilabel_task(config, data)
    else:
        check_densenet_images(config, data)
        task = _classification_task(config, x.shape)
    for name, splits in sorted(data.sites.items()):
        for split_name in ("train", "val", "test"):
            task.check_labels(
                data=getattr(splits, split_name), where=f"site '{name}' {split_name} split"
            )
    task.check_labels(data=data.central_test, where="central test set")
    return task


def _classification_task(config: Config, shape: tuple[int, ...]) -> ClassificationTask:
    return ClassificationTask(
        num_classes=config.task.num_classes,
        in_channels=int(shape[1]),
        spatial_dims=len(shape) - 2,
        positive_label=config.task.positive_label,
        model=config.task.model,
        width=config.task.width,
        augment=config.task.augment,
        dtype=config.task.dtype,
        densenet=densenet_settings(config),
    )


class CentralEvaluator:
    """Scores weights on the central test set (simulation only)."""

    def __init__(
        self,
        *,
        task: ImageTask,
        data: ArraySplit,
        device: torch.device,
        model: torch.nn.Module,
    ) -> None:
        self._task, self._data, self._device, self._model = task, data, device, model

    def __call__(self, params: Params) -> dict[str, float]:
        """Metrics of ``params`` on the central test set."""
        load_params(self._model, params, where="central evaluation")
        return self._task.evaluate(model=self._model, data=self._data, device=self._device)

    def confidence_intervals(
        self, params: Params, *, resamples: int, seed: int
    ) -> dict[str, tuple[float, float]]:
        """Bootstrap intervals of ``params``'s metrics on the central test set."""
        load_params(self._model, params, where="central evaluation")
        return self._task.confidence_intervals(
            model=self._model, data=self._data, device=self._device, resamples=resamples, seed=seed
        )


class _Observer:
    """Writes each round to the run directory and reports progress."""

    def __init__(
        self,
        *,
        run: RunDir | None,
        strategy: str,
        progress: ProgressFn | None,
        rounds: int,
        checkpoint: bool,
    ) -> None:
        self._run, self._strategy, self._progress = run, strategy, progress
        self._rounds, self._checkpoint = rounds, checkpoint

    def on_round(self, record: RoundRecord, params: Params, state: StateRecord) -> None:
        if self._run is not None:
            self._run.append_metrics(record)
            if self._checkpoint:
                self._run.write_checkpoint(
                    rnd=record.rnd,
                    arm=record.arm,
                    params=params,
                    state=state,
                    strategy=self._strategy,
                )
        if self._progress is not None:
            self._progress(record, self._rounds)


@dataclass(frozen=True)
class RunResult:
    """What a simulated run produced."""

    path: Path | None
    arms: Mapping[str, ArmResult]
    params: Params
    summary: Mapping[str, Any]


def _final(history: Sequence[RoundRecord]) -> ArmResult:
    last = history[-1]
    return ArmResult(
        global_metrics=last.global_metrics, per_site=last.per_site, site_mean=last.site_mean
    )


def _merge_local(
    runs: Mapping[str, FederationResult],
    *,
    train_sizes: Mapping[str, int],
    test_sizes: Mapping[str, int],
) -> list[RoundRecord]:
    """One record per round from the sites' separate local-only runs.

    ``per_site`` holds each site's own model on its own test split; ``global``
    is the train-size-weighted mean of the local models on the central test set.
    """
    names = sorted(runs)
    merged: list[RoundRecord] = []
    for i, first in enumerate(runs[names[0]].history):
        rows = {s: runs[s].history[i] for s in names}
        per_site = {s: rows[s].per_site[s] for s in names if s in rows[s].per_site}
        central = [
            (float(train_sizes[s]), r.global_metrics) for s, r in rows.items() if r.global_metrics
        ]
        merged.append(
            RoundRecord(
                rnd=first.rnd,
                arm=Arm.LOCAL,
                global_metrics=mean_metrics(central) if central else None,
                per_site=per_site,
                site_mean=mean_metrics([(float(test_sizes[s]), m) for s, m in per_site.items()]),
                val=mean_metrics([(float(train_sizes[s]), r.val) for s, r in rows.items()]),
                wall_s=sum(r.wall_s for r in rows.values()),
                bytes_down=0,
                bytes_up=0,
                sites_sampled=names,
                sites_failed={s: c for r in rows.values() for s, c in r.sites_failed.items()},
            )
        )
    return merged


def pooled_recipe(
    config: Config, hparams: Mapping[str, HParamValue], plan: FederationPlan
) -> tuple[dict[str, HParamValue], FederationPlan]:
    """The pooled arm's settings: the federation's, or the ``[baselines] pooled_*`` recipe.

    With ``pooled_epochs`` set, the pooled model trains once for that many
    epochs (one optimiser, never reset), as centralised protocols do.
    """
    b = config.baselines
    out = dict(hparams)
    if b.pooled_optimizer is not None:
        out[HParam.OPTIMIZER] = b.pooled_optimizer
    if b.pooled_lr is not None:
        out[HParam.LR] = b.pooled_lr
    if b.pooled_batch_size is not None:
        out[HParam.BATCH_SIZE] = b.pooled_batch_size
    if b.pooled_epochs is None:
        return out, plan
    out[HParam.LOCAL_EPOCHS] = b.pooled_epochs
    out[HParam.LOCAL_STEPS] = 0
    return out, dataclasses.replace(plan, rounds=1)


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


def fault_of(config: Config, site: str) -> FaultSpec:
    """The simulated fault configured for ``site`` (none by default)."""
    table = config.sites.get(site)
    if table is None:
        return FaultSpec()
    return FaultSpec(
        kind=Fault(table.fault), scale=table.fault_scale, noise_std=table.fault_noise_std
    )


def _with_intervals(
    arm: ArmResult,
    *,
    strategy: Strategy[Any],
    result: FederationResult,
    runtime: InProcessRuntime,
    central: CentralEvaluator | None,
    config: Config,
) -> ArmResult:
    """``arm`` with bootstrap 95 % intervals of its final model, per site and central."""
    resamples, seed = config.report.bootstrap_resamples, config.report.bootstrap_seed
    if resamples < 1:
        return arm
    state = strategy.state_from_record(result.state)
    sites, _ = evaluate_strategy_sites(
        strategy=strategy,
        state=state,
        runtime=runtime,
        params=result.params,
        rnd=config.federation.rounds,
        split=Split.TEST,
        ci_resamples=resamples,
        ci_seed=seed,
    )
    central_ci = (
        central.confidence_intervals(result.params, resamples=resamples, seed=seed)
        if central is not None and not is_personalised(strategy)
        else None
    )
    return dataclasses.replace(
        arm, ci_global=central_ci, ci_per_site={s: r.ci for s, r in sites.items()}
    )


def _pooled_splits(data: FederatedData) -> SiteSplits:
    names = sorted(data.sites)
    return SiteSplits(
        train=concat_splits([data.sites[s].train for s in names]),
        val=concat_splits([data.sites[s].val for s in names]),
        test=concat_splits([data.sites[s].test for s in names]),
    )


def run_experiment(
    *,
    config: Config,
    out: Path | None,
    progress: ProgressFn | None = None,
    resume: bool = False,
) -> RunResult:
    """Run the federated arm, and the pooled and local arms when the config asks.

    Everything that can be checked is checked before ``out`` is created: a bad
    config, a missing or corrupt file, a label outside the task or a site that
    is too small stops the run with nothing written.

    Parameters
    ----------
    config
        A validated configuration.
    out
        The run directory to create (must be absent or empty); ``None`` writes nothing.
    progress
        Called after each round with the record and the number of rounds.
    resume
        Continue the run in ``out`` after its last checkpointed round: same
        config, strategy state, site states and metrics history up to that
        round; lines written after it and every baseline are redone.
    """
    started = time.perf_counter()
    torch.set_num_threads(config.runtime.torch_threads)
    device = resolve_device(config.runtime.device)
    data = load_data(config)
    check_site_names(config, list(data.sites))
    task = build_task(config, data)
    seed, f = config.federation.seed, config.federation
    hparams = training_hparams(config)
    strategy = build_strategy(
        name=config.strategy.name,
        hparams=hparams,
        options=config.strategy.options,
        context=BuildContext(
            num_sites=len(data.sites),
            seed=seed,
            site_groups=site_groups(config),
            site_names=tuple(sorted(data.sites)),
        ),
    )
    overrides = site_overrides(config)
    if overrides:
        strategy = PerSiteSettings(inner=strategy, overrides=overrides)
    run, resume_point = open_run(config=config, out=out, resume=resume)

    workspace = task.build_model(seed=seed).to(device)  # one model for all in-process sites

    def make_sites() -> list[Site]:
        return [
            Site(name=name, data=splits, task=task, seed=seed, device=device, model=workspace)
            for name, splits in sorted(data.sites.items())
        ]

    def make_federated_sites() -> list[SiteEndpoint]:
        """The federated arm's sites, with the configured faults (baselines stay honest).

        Each keeps its site state in the run directory, so a resumed run picks
        it up as of the last checkpointed round.
        """
        endpoints: list[SiteEndpoint] = []
        for name, splits in sorted(data.sites.items()):
            spec = fault_of(config, name)
            if spec.kind == Fault.LABEL_FLIP:
                splits = flip_labels(splits, num_classes=task.num_classes)
            site = Site(
                name=name,
                data=splits,
                task=task,
                seed=seed,
                device=device,
                model=workspace,
                state_dir=run.site_dir(name) if run is not None else None,
                resume_round=resume_point.completed_round if resume_point else None,
            )
            faulty = spec.kind not in (Fault.NONE, Fault.LABEL_FLIP)
            endpoints.append(FaultySite(site=site, fault=spec, seed=seed) if faulty else site)
        return endpoints

    initial = params_copy(task.build_model(seed=seed))
    central = CentralEvaluator(task=task, data=data.central_test, device=device, model=workspace)
    sites_runtime = InProcessRuntime(sites=make_federated_sites())
    plan = FederationPlan(
        rounds=f.rounds,
        fraction=f.fraction,
        min_sites=f.min_sites,
        seed=seed,
        eval_every=f.eval_every,
    )
    federated = run_federation(
        strategy=strategy,
        runtime=sites_runtime,
        initial_params=initial,
        plan=plan,
        observer=_Observer(
            run=run, strategy=strategy.name, progress=progress, rounds=f.rounds, checkpoint=True
        ),
        arm=Arm.FEDERATED,
        evaluate_central=central,
        resume=resume_point,
    )
    history = list(federated.history)
    if not history and run is not None:  # resumed after the last round: nothing left to run
        history = [record_from_line(run.metrics_lines()[-1])]
    arms: dict[str, ArmResult] = {
        Arm.FEDERATED: _with_intervals(
            _final(history),
            strategy=strategy,
            result=federated,
            runtime=sites_runtime,
            central=central,
            config=config,
        )
    }
    single = dataclasses.replace(plan, fraction=1.0, min_sites=1)
    if config.baselines.pooled:
        pooled_hparams, pooled_plan = pooled_recipe(config, hparams, single)
        pooled_site = Site(
            name="pooled",
            data=_pooled_splits(data),
            task=task,
            seed=seed,
            device=device,
            model=workspace,
        )
        pooled_strategy = FedAvg(hparams=pooled_hparams)
        pooled = run_federation(
            strategy=pooled_strategy,
            runtime=InProcessRuntime(sites=[pooled_site]),
            initial_params=initial,
            plan=pooled_plan,
            observer=_Observer(
                run=run,
                strategy="pooled",
                progress=progress,
                rounds=pooled_plan.rounds,
                checkpoint=False,
            ),
            arm=Arm.POOLED,
            eval_runtime=sites_runtime,
            evaluate_central=central,
            count_bytes=False,
        )
        arms[Arm.POOLED] = _with_intervals(
            _final(pooled.history),
            strategy=pooled_strategy,
            result=pooled,
            runtime=sites_runtime,
            central=central,
            config=config,
        )
    if config.baselines.local:
        local_runs: dict[str, FederationResult] = {}
        local_sites = make_sites()
        for site in local_sites:
            local_runs[site.name] = run_federation(
                strategy=FedAvg(hparams=hparams),
                runtime=InProcessRuntime(sites=[site]),
                initial_params=initial,
                plan=single,
                observer=_Observer(
                    run=None, strategy="local", progress=None, rounds=f.rounds, checkpoint=False
                ),
                arm=Arm.LOCAL,
                evaluate_central=central,
                count_bytes=False,
            )
        merged = _merge_local(
            local_runs,
            train_sizes={s: len(v.train) for s, v in data.sites.items()},
            test_sizes={s: len(v.test) for s, v in data.sites.items()},
        )
        observer = _Observer(
            run=run, strategy="local", progress=progress, rounds=f.rounds, checkpoint=False
        )
        for record in merged:
            observer.on_round(record, {}, StateRecord(tensors={}))
        local_ci: dict[str, Mapping[str, tuple[float, float]]] = {}
        for site in local_sites:
            one = _with_intervals(
                _final(merged),
                strategy=FedAvg(hparams=hparams),
                result=local_runs[site.name],
                runtime=InProcessRuntime(sites=[site]),
                central=None,
                config=config,
            )
            local_ci.update(one.ci_per_site)
        # Each local model is scored on its own site; there is no one local model to
        # give a central interval for.
        arms[Arm.LOCAL] = dataclasses.replace(_final(merged), ci_per_site=local_ci)
    summary: dict[str, Any] = {
        Record.ARMS: {arm: arm_json(result) for arm, result in arms.items()},
        Record.ROUNDS: f.rounds,
        Record.WALL_S: round(time.perf_counter() - started, 3),
        Record.SEED: seed,
        Record.TORCH_THREADS: torch.get_num_threads(),
        "device": str(device),
        "strategy": strategy.name,
        Record.VERSIONS: versions(),
        Record.SITES: sites_json(data),
    }
    if run is not None:
        run.write_model(
            params=federated.params,
            meta={
                "task": dataclasses.asdict(config.task),
                "in_channels": task.in_channels,
                "spatial_dims": task.spatial_dims,
                "rounds": f.rounds,
                "strategy": strategy.name,
                "seed": seed,
            },
        )
        run.write_summary(summary)
    return RunResult(path=out, arms=arms, params=federated.params, summary=summary)
