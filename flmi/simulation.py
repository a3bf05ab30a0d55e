"""A whole federation on one machine: data, sites, arms, run directory.

This wires the pieces together; the federation loop itself lives in
:func:`flmi.core.federation.run_federation` and the site code path in
:class:`flmi.site.site.Site`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flmi.config import (
    Config,
    check_site_names,
    partition_seed,
    training_hparams,
)
from flmi.core.exchange import SecureAggregation
from flmi.core.federation import (
    FederationPlan,
    FederationResult,
    FinalScoring,
    ResumePoint,
    RoundRecord,
    Runtime,
    evaluate_strategy_sites,
    is_personalised,
    mean_metrics,
    run_federation,
)
from flmi.core.keys import Arm, HParam, Split
from flmi.core.messages import EvaluateResult, HParamValue
from flmi.core.params import Params
from flmi.core.strategy import (
    StateRecord,
    Strategy,
)
from flmi.data.arrays import ArraySplit, FederatedData, SiteSplits, concat_splits
from flmi.data.scanner_shift import scanner_json, site_scanners
from flmi.data.sources import load_data
from flmi.data.unlabeled import semi_supervised_data
from flmi.federated_sites import SiteRecipe, federated_sites
from flmi.forensics.breakpoint import BreakpointReached, breaking_progress, check_breakpoint
from flmi.forensics.contributions_file import write_contributions
from flmi.forensics.record import open_recorder
from flmi.privacy.dp_sgd import check_dp_model
from flmi.privacy.noise_source import NoiseSource, warn_if_insecure
from flmi.privacy.setup import build_secure
from flmi.report.before_training import describe_sites, survival_curves
from flmi.report.model_card import CARD_MD, write_model_card
from flmi.report.operating import ArmCurves, arm_curves, curves_json
from flmi.report.plugins import plugin_record
from flmi.report.resume import open_run, record_from_line
from flmi.report.rundir import RunDir
from flmi.report.summary import ArmResult, arm_summary, privacy_block, sites_json, versions
from flmi.report.summary_schema import Summary
from flmi.report.trackers import Tracker, check_trackers, close_all, open_trackers
from flmi.runtime.inprocess import InProcessRuntime, SiteEndpoint
from flmi.runtime.registry import RUNTIMES
from flmi.site.site import Site, SitePolicy
from flmi.strategies.fedavg import FedAvg
from flmi.tasks.base import Task
from flmi.tasks.device import resolve_device
from flmi.tasks.registry import build_task, check_task
from flmi.tasks.torch_params import load_params, params_copy
from flmi.wiring import initial_model, make_strategy, model_meta

log = logging.getLogger("flmi.simulation")

ProgressFn = Callable[[RoundRecord, int], None]


class CentralEvaluator:
    """Scores weights on the central test set (simulation only)."""

    def __init__(
        self,
        *,
        task: Task,
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
        trackers: Sequence[Tracker] = (),
    ) -> None:
        self._run, self._strategy, self._progress = run, strategy, progress
        self._rounds, self._checkpoint, self._trackers = rounds, checkpoint, trackers

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
        for tracker in self._trackers:
            tracker.log_round(record)
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


def _final_evaluation(
    arm: ArmResult,
    *,
    strategy: Strategy[Any],
    result: FederationResult,
    runtime: Runtime,
    central: CentralEvaluator | None,
    config: Config,
) -> ArmResult:
    """``arm`` with what its final model gives beyond the metrics.

    Bootstrap 95 % intervals per site and central; each site's score
    histograms on its test and validation splits (counts only, no cell under
    ``[report] min_count``); the operating threshold, chosen on the validation
    histograms alone.
    """
    resamples, seed = config.report.bootstrap_resamples, config.report.bootstrap_seed
    bins = config.report.histogram_bins
    state = strategy.state_from_record(result.state)

    def ask(split: Split, ci: int) -> Mapping[str, EvaluateResult]:
        sites, _ = evaluate_strategy_sites(
            strategy=strategy,
            state=state,
            runtime=runtime,
            params=result.params,
            rnd=config.federation.rounds,
            split=split,
            ci_resamples=ci,
            ci_seed=seed,
            histogram_bins=bins,
        )
        return sites

    # The last round scored the final model with everything asked here (see _final_scoring).
    if result.final is not None:
        test, val = result.final.test, result.final.val
    else:
        test, val = ask(Split.TEST, resamples), ask(Split.VAL, 0)
    scored_centrally = central is not None and not is_personalised(strategy)
    central_ci = (
        central.confidence_intervals(result.params, resamples=resamples, seed=seed)
        if central is not None and scored_centrally and resamples > 0
        else None
    )
    # No central histogram: the central test set is every site's test split, so its
    # counts less the sites' would give back what a site merged or withheld.
    curves = arm_curves(
        test_per_site={s: r.histogram for s, r in test.items() if r.histogram is not None},
        val_per_site={s: r.histogram for s, r in val.items() if r.histogram is not None},
        test_central=None,
        bins=bins,
        target_sensitivity=config.report.target_sensitivity,
        withheld=sorted(s for s, r in test.items() if r.histogram_withheld),
    )
    return dataclasses.replace(
        arm,
        ci_global=central_ci,
        ci_per_site={s: r.ci for s, r in test.items()} if resamples > 0 else {},
        curves=curves,
    )


def _final_scoring(config: Config, plan: FederationPlan) -> FinalScoring | None:
    """What the last round of ``plan`` asks the sites so :func:`_final_evaluation` need not.

    ``None`` when that round is not the one the final evaluation is numbered
    by (a pooled recipe with its own epochs): the sites seed their intervals
    by round, so asking in another round would change them.
    """
    if plan.rounds != config.federation.rounds:
        return None
    return FinalScoring(
        ci_resamples=config.report.bootstrap_resamples,
        ci_seed=config.report.bootstrap_seed,
        histogram_bins=config.report.histogram_bins,
    )


def curves_document(config: Config, arms: Mapping[str, ArmResult]) -> dict[str, Any]:
    """``curves.json``: every arm's final-round histograms and what they give."""
    t = config.task
    return {
        "bins": config.report.histogram_bins,
        "positive_label": t.positive_label,
        "num_classes": t.num_classes,
        "score": (
            f"predicted probability of class {t.positive_label}"
            + (" (one-vs-rest)" if t.num_classes > 2 else "")
        ),
        "arms": {arm: curves_json(r.curves) for arm, r in arms.items() if r.curves is not None},
    }


def _pooled_splits(data: FederatedData) -> SiteSplits:
    names = sorted(data.sites)
    unlabeled = [u for s in names if (u := data.sites[s].unlabeled) is not None]
    return SiteSplits(
        train=concat_splits([data.sites[s].train for s in names]),
        val=concat_splits([data.sites[s].val for s in names]),
        test=concat_splits([data.sites[s].test for s in names]),
        unlabeled=np.concatenate(unlabeled) if unlabeled else None,
    )


def run_experiment(
    *,
    config: Config,
    out: Path | None,
    progress: ProgressFn | None = None,
    resume: bool = False,
    strategy: Strategy[Any] | None = None,
    task: Task | None = None,
    break_after_round: int | None = None,
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
    strategy
        A strategy object to run instead of the one ``[strategy] name``
        selects (as Flower takes a Strategy); ``[sites.NAME]`` settings and
        ``[privacy]`` still wrap it. Pass it again to resume.
    task
        A task object to train instead of the one ``[task] name`` builds;
        every target of the data is checked against it. Pass it again to resume.
    break_after_round
        Stop cleanly after this round of the federated arm (metrics, checkpoint
        and record written) by raising
        :class:`~flmi.forensics.breakpoint.BreakpointReached`; ``resume``
        continues it exactly.
    """
    started = time.perf_counter()
    if break_after_round is not None:
        progress = breaking_progress(progress, after_round=break_after_round)
    prepared = _prepare(
        config=config, out=out, progress=progress, resume=resume, strategy=strategy, task=task
    )
    if break_after_round is not None:
        done = prepared.resume_point.completed_round if prepared.resume_point else 0
        check_breakpoint(break_after_round, rounds=config.federation.rounds, resumed_after=done)
    try:
        with _sites_runtime(prepared, task=task) as sites_runtime:
            federated = _federated_arm(prepared, sites_runtime=sites_runtime)
            arms: dict[str, ArmResult] = {Arm.FEDERATED: federated.arm}
            if config.baselines.pooled:
                arms[Arm.POOLED] = _pooled_arm(prepared, eval_runtime=federated.runtime)
    except BreakpointReached:
        close_all(prepared.trackers)
        raise
    if config.baselines.local:
        arms[Arm.LOCAL] = _local_arm(prepared)
    summary = _write_outputs(prepared, arms=arms, outcome=federated, started=started)
    if config.record.contributions and out is not None:
        summary = write_contributions(run_dir=out)
    return RunResult(path=out, arms=arms, params=federated.result.params, summary=summary)


@dataclass(frozen=True)
class _Prepared:
    """What every arm of a run shares, built and checked by :func:`_prepare`."""

    config: Config
    data: FederatedData
    left_out: list[str]
    task: Task
    strategy: Strategy[Any]
    hparams: dict[str, HParamValue]
    device: torch.device
    noise: NoiseSource
    secure: SecureAggregation | None
    data_report: dict[str, object]
    initial: Params
    plugins: dict[str, Any]
    run: RunDir | None
    resume_point: ResumePoint | None
    trackers: list[Tracker]
    workspace: torch.nn.Module
    policy: SitePolicy
    central: CentralEvaluator
    plan: FederationPlan
    progress: ProgressFn | None


def _prepare(
    *,
    config: Config,
    out: Path | None,
    progress: ProgressFn | None,
    resume: bool,
    strategy: Strategy[Any] | None,
    task: Task | None,
) -> _Prepared:
    """Load and check the data, build task and strategy, then open the run directory."""
    torch.set_num_threads(config.runtime.torch_threads)
    device = resolve_device(config.runtime.device)
    if (runtime_check := RUNTIMES.lookup(config.runtime.name).check) is not None:
        runtime_check(config.runtime)  # e.g. a missing extra, before anything is written
    data = load_data(config)
    check_site_names(config, list(data.sites))
    data, left_out = semi_supervised_data(config, data)
    objects: dict[str, object] = {
        kind: part for kind, part in (("strategy", strategy), ("task", task)) if part is not None
    }
    if task is None:
        task = build_task(config, data)
    else:
        check_task(task, data)
    seed = config.federation.seed
    hparams = training_hparams(config)
    strategy = make_strategy(config, list(data.sites), base=strategy)
    if config.privacy.dp == "sample":
        check_dp_model(task.build_model(seed=seed))
    noise = NoiseSource.for_run(
        insecure_reproducible=config.privacy.insecure_reproducible_noise, seed=seed
    )
    warn_if_insecure(noise, dp=config.privacy.dp)
    secure = build_secure(config.privacy, strategy=strategy.name, site_names=sorted(data.sites))
    r = config.runtime
    check_trackers(tensorboard=r.tensorboard, mlflow=r.mlflow)
    data_report = describe_sites(config, data)
    curves = survival_curves(config, data) if config.task.name == "survival" else None
    initial = params_copy(initial_model(config, task, seed=seed))
    plugins = plugin_record(config, objects=objects)
    run, resume_point = open_run(config=config, out=out, resume=resume, plugins=plugins)
    if run is not None and curves is not None:
        from flmi.report.km_plot import write_km  # matplotlib: survival runs only

        write_km(run.path, curves)
    # Flushed every round; a run that dies leaves its trackers as of its last round.
    trackers = (
        open_trackers(
            run_dir=run.path, tensorboard=r.tensorboard, mlflow=r.mlflow, config=config.to_dict()
        )
        if run is not None
        else []
    )

    workspace = task.build_model(seed=seed).to(device)  # one model for all in-process sites
    policy = SitePolicy(min_count=config.report.min_count)
    central = CentralEvaluator(task=task, data=data.central_test, device=device, model=workspace)
    return _Prepared(
        config=config,
        data=data,
        left_out=left_out,
        task=task,
        strategy=strategy,
        hparams=hparams,
        device=device,
        noise=noise,
        secure=secure,
        data_report=data_report,
        initial=initial,
        plugins=plugins,
        run=run,
        resume_point=resume_point,
        trackers=trackers,
        workspace=workspace,
        policy=policy,
        central=central,
        plan=_federation_plan(config),
        progress=progress,
    )


def _federation_plan(config: Config) -> FederationPlan:
    """The federated arm's rounds, sampling and evaluation schedule from ``[federation]``."""
    f = config.federation
    return FederationPlan(
        rounds=f.rounds,
        fraction=f.fraction,
        min_sites=f.min_sites,
        seed=f.seed,
        eval_every=f.eval_every,
        max_failed_rounds=f.max_failed_rounds,
    )


def _make_sites(p: _Prepared) -> list[Site]:
    """The sites as they are, one per data site (the local arm's)."""
    return [
        Site(
            name=name,
            data=splits,
            task=p.task,
            seed=p.config.federation.seed,
            device=p.device,
            model=p.workspace,
            policy=p.policy,
        )
        for name, splits in sorted(p.data.sites.items())
    ]


def _make_federated_sites(p: _Prepared) -> list[SiteEndpoint]:
    """The federated arm's sites, with the configured faults (baselines stay honest).

    Each keeps its site state in the run directory, so a resumed run picks
    it up as of the last checkpointed round.
    """
    return federated_sites(
        config=p.config,
        data=p.data,
        task=p.task,
        device=p.device,
        workspace=p.workspace,
        policy=p.policy,
        noise=p.noise,
        run_path=p.run.path if p.run is not None else None,
        resume_round=p.resume_point.completed_round if p.resume_point else None,
    )


@contextmanager
def _sites_runtime(p: _Prepared, *, task: Task | None) -> Iterator[Runtime]:
    """The federated arm's runtime, open for every arm that asks the sites; closed after.

    A runtime whose workers host the sites builds them there from a
    :class:`SiteRecipe` (``task``: the object given to the run, if any).
    """
    spec = RUNTIMES.lookup(p.config.runtime.name)
    if spec.build_hosted is None:
        yield spec.build(sites=_make_federated_sites(p))
        return
    recipe = SiteRecipe(
        config=p.config,
        run_path=p.run.path if p.run is not None else None,
        resume_round=p.resume_point.completed_round if p.resume_point else None,
        task=task,
    )
    hosted = spec.build_hosted(recipe=recipe, site_names=sorted(p.data.sites))
    try:
        yield hosted
    finally:
        hosted.close()


@dataclass(frozen=True)
class _Federated:
    """The federated arm: its run, every round's record, its final scores, its sites."""

    result: FederationResult
    history: list[RoundRecord]
    arm: ArmResult
    runtime: Runtime


def _federated_arm(p: _Prepared, *, sites_runtime: Runtime) -> _Federated:
    """Run (or resume) the federated arm and score its final model."""
    config, strategy, run, central = p.config, p.strategy, p.run, p.central
    f = config.federation
    federated = run_federation(
        strategy=strategy,
        runtime=sites_runtime,
        initial_params=p.initial,
        plan=p.plan,
        observer=_Observer(
            run=run,
            strategy=strategy.name,
            progress=p.progress,
            rounds=f.rounds,
            checkpoint=True,
            trackers=p.trackers,
        ),
        arm=Arm.FEDERATED,
        evaluate_central=central,
        resume=p.resume_point,
        secure=p.secure,
        final_scoring=_final_scoring(config, p.plan),
        recorder=open_recorder(
            enabled=config.record.updates,
            run_dir=run.path if run is not None else None,
            strategy=strategy.name,
            sites=sorted(p.data.sites),
            initial=p.initial,
            resumed_after=p.resume_point.completed_round if p.resume_point else None,
        ),
    )
    history = list(federated.history)
    if not history and run is not None:  # resumed after the last round: nothing left to run
        history = [record_from_line(run.metrics_lines()[-1])]
    arm = _final_evaluation(
        _final(history),
        strategy=strategy,
        result=federated,
        runtime=sites_runtime,
        central=central,
        config=config,
    )
    return _Federated(result=federated, history=history, arm=arm, runtime=sites_runtime)


def _pooled_arm(p: _Prepared, *, eval_runtime: Runtime) -> ArmResult:
    """Train one model on every site's data together; score it on each site's test split."""
    config, central = p.config, p.central
    single = dataclasses.replace(p.plan, fraction=1.0, min_sites=1)
    pooled_hparams, pooled_plan = pooled_recipe(config, p.hparams, single)
    pooled_site = Site(
        name="pooled",
        data=_pooled_splits(p.data),
        task=p.task,
        seed=config.federation.seed,
        device=p.device,
        model=p.workspace,
    )
    pooled_strategy = FedAvg(hparams=pooled_hparams)
    pooled = run_federation(
        strategy=pooled_strategy,
        runtime=InProcessRuntime(sites=[pooled_site]),
        initial_params=p.initial,
        plan=pooled_plan,
        observer=_Observer(
            run=p.run,
            strategy="pooled",
            progress=p.progress,
            rounds=pooled_plan.rounds,
            checkpoint=False,
            trackers=p.trackers,
        ),
        arm=Arm.POOLED,
        eval_runtime=eval_runtime,
        evaluate_central=central,
        count_bytes=False,
        final_scoring=_final_scoring(config, pooled_plan),
    )
    return _final_evaluation(
        _final(pooled.history),
        strategy=pooled_strategy,
        result=pooled,
        runtime=eval_runtime,
        central=central,
        config=config,
    )


def _local_arm(p: _Prepared) -> ArmResult:
    """Train each site alone; one record per round over all of them, then final scores."""
    hparams, data, f = p.hparams, p.data, p.config.federation
    single = dataclasses.replace(p.plan, fraction=1.0, min_sites=1)
    local_runs: dict[str, FederationResult] = {}
    local_sites = _make_sites(p)
    for site in local_sites:
        local_runs[site.name] = run_federation(
            strategy=FedAvg(hparams=hparams),
            runtime=InProcessRuntime(sites=[site]),
            initial_params=p.initial,
            plan=single,
            observer=_Observer(
                run=None, strategy="local", progress=None, rounds=f.rounds, checkpoint=False
            ),
            arm=Arm.LOCAL,
            evaluate_central=p.central,
            count_bytes=False,
            final_scoring=_final_scoring(p.config, single),
        )
    merged = _merge_local(
        local_runs,
        train_sizes={s: len(v.train) for s, v in data.sites.items()},
        test_sizes={s: len(v.test) for s, v in data.sites.items()},
    )
    observer = _Observer(
        run=p.run,
        strategy="local",
        progress=p.progress,
        rounds=f.rounds,
        checkpoint=False,
        trackers=p.trackers,
    )
    for record in merged:
        observer.on_round(record, {}, StateRecord(tensors={}))
    return _local_final(p, sites=local_sites, runs=local_runs, merged=merged)


def _local_final(
    p: _Prepared,
    *,
    sites: Sequence[Site],
    runs: Mapping[str, FederationResult],
    merged: Sequence[RoundRecord],
) -> ArmResult:
    """The local arm's final scores: each site's own model on its own splits."""
    config, hparams = p.config, p.hparams
    local_ci: dict[str, Mapping[str, tuple[float, float]]] = {}
    local_curves: list[ArmCurves] = []
    for site in sites:
        one = _final_evaluation(
            _final(merged),
            strategy=FedAvg(hparams=hparams),
            result=runs[site.name],
            runtime=InProcessRuntime(sites=[site]),
            central=None,
            config=config,
        )
        local_ci.update(one.ci_per_site)
        if one.curves is not None:
            local_curves.append(one.curves)
    # Each local model is scored on its own site; there is no one local model to
    # give a central interval or histogram for. The threshold is chosen on every
    # local model's validation histogram together.
    return dataclasses.replace(
        _final(merged),
        ci_per_site=local_ci,
        curves=arm_curves(
            test_per_site={s: h for c in local_curves for s, h in c.test_per_site.items()},
            val_per_site={s: h for c in local_curves for s, h in c.val_per_site.items()},
            test_central=None,
            bins=config.report.histogram_bins,
            target_sensitivity=config.report.target_sensitivity,
            withheld=sorted(w for c in local_curves for w in c.withheld),
        ),
    )


def _write_outputs(
    p: _Prepared, *, arms: Mapping[str, ArmResult], outcome: _Federated, started: float
) -> dict[str, Any]:
    """The run's summary; with a run directory, the model, summary, curves and card."""
    config, data, task, strategy, run = p.config, p.data, p.task, p.strategy, p.run
    seed, f, device = config.federation.seed, config.federation, p.device
    federated, history = outcome.result, outcome.history
    plugins, data_report, left_out, trackers = p.plugins, p.data_report, p.left_out, p.trackers
    summary = Summary(
        arms={arm: arm_summary(result) for arm, result in arms.items()},
        rounds=f.rounds,
        wall_s=round(time.perf_counter() - started, 3),
        seed=seed,
        torch_threads=torch.get_num_threads(),
        device=str(device),
        strategy=strategy.name,
        plugins=plugins,
        privacy=(
            privacy_block(config.privacy, history)
            if config.privacy.dp != "none"
            else dataclasses.asdict(config.privacy)
        ),
        versions=versions(),
        # Class counts for tasks with classes (segmentation: cases containing each class).
        sites=sites_json(
            data,
            label_counts=config.task.name in ("classification", "segmentation"),
            min_count=config.report.min_count,
        ),
        data=data_report,
        sites_left_out=dict.fromkeys(left_out, "no_labeled_training_data") if left_out else None,
        unreadable=(
            {k: dict(v) for k, v in sorted(data.unreadable.items())} if data.unreadable else None
        ),
        site_scanners=(
            {
                name: scanner_json(profile)
                for name, profile in site_scanners(
                    site_names=list(data.sites), seed=partition_seed(config)
                ).items()
            }
            if config.partition.scanner_shift
            else None
        ),
    )
    fed_curves = arms[Arm.FEDERATED].curves
    if run is not None:
        run.write_model(
            params=federated.params,
            meta={
                **model_meta(config, task, strategy.name),
                "input_shape": list(data.central_test.x.shape[1:]),
                "threshold": (fed_curves.threshold.to_json() if fed_curves is not None else None),
            },
        )
        run.write_summary(summary)
        run.write_curves(curves_document(config, arms))
        if not (run.path / CARD_MD).exists():  # a resumed run keeps a card already edited
            write_model_card(run.path)
    close_all(trackers)
    return summary.to_json()
