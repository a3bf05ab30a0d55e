"""The federation loop: one readable function that every runtime shares.

Per round: sample sites, send instructions, collect replies, keep errors apart
from updates, reject invalid updates, aggregate, evaluate, record, checkpoint
(through the observer).
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from flmi.core.errors import ConfigError, FlmiError, RoundFailedError, SchemaError
from flmi.core.exchange import SecureAggregation, SecureRound, StagedExchange
from flmi.core.keys import Arm, Extra, Record, Split
from flmi.core.messages import (
    ClientError,
    ClientUpdate,
    ErrorCode,
    EvaluateInstruction,
    EvaluateReply,
    EvaluateResult,
    HParamValue,
    TrainInstruction,
    TrainReply,
)
from flmi.core.params import Params, check_finite, check_same_schema
from flmi.core.rng import generator
from flmi.core.strategy import StateRecord, Strategy, capabilities_of

log = logging.getLogger("flmi.federation")

Metrics = Mapping[str, float]


class Runtime(Protocol):
    """Moves messages between the server loop and the sites; runs no algorithm."""

    def site_names(self) -> Sequence[str]:
        """Names of the sites this runtime reaches, sorted."""
        ...

    def train(self, instructions: Mapping[str, TrainInstruction]) -> Mapping[str, TrainReply]:
        """Deliver each instruction to its site and return every site's reply."""
        ...

    def evaluate(
        self, instructions: Mapping[str, EvaluateInstruction]
    ) -> Mapping[str, EvaluateReply]:
        """Deliver evaluation requests and return every site's reply."""
        ...


@dataclass(frozen=True)
class FederationPlan:
    """How many rounds, which sites take part, and when to evaluate.

    Parameters
    ----------
    rounds
        Number of rounds, counted from 1.
    fraction
        Share of sites sampled each round (``0 < fraction <= 1``).
    min_sites
        Fewest sites sampled, and fewest valid updates needed to aggregate.
    seed
        Seed of the server's sampling generator.
    eval_every
        Evaluate every this many rounds (the final round always).
    max_failed_rounds
        The run stops with :class:`~flmi.core.errors.RoundFailedError` at the
        round that makes this many rounds aggregate nothing (fewer valid
        updates than ``min_sites``: every update rejected, every site failed),
        after recording it; 1 stops at the first such round.
    """

    rounds: int
    fraction: float
    min_sites: int
    seed: int
    eval_every: int = 1
    max_failed_rounds: int = 1

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ConfigError(f"federation.rounds must be at least 1, got {self.rounds}")
        if not 0.0 < self.fraction <= 1.0:
            raise ConfigError(f"federation.fraction must be in (0, 1], got {self.fraction}")
        if self.min_sites < 1:
            raise ConfigError(f"federation.min_sites must be at least 1, got {self.min_sites}")
        if self.eval_every < 1:
            raise ConfigError(f"federation.eval_every must be at least 1, got {self.eval_every}")
        if self.max_failed_rounds < 1:
            raise ConfigError(
                f"federation.max_failed_rounds must be at least 1, got {self.max_failed_rounds}"
            )


@dataclass(frozen=True)
class RoundRecord:
    """What one round of one arm produced: one line of ``metrics.jsonl``."""

    rnd: int
    arm: str
    global_metrics: Metrics | None
    per_site: Mapping[str, Metrics]
    site_mean: Metrics
    val: Metrics
    wall_s: float
    bytes_down: int
    bytes_up: int
    sites_sampled: Sequence[str]
    sites_failed: Mapping[str, str] = field(default_factory=dict)
    strategy: Mapping[str, Any] = field(default_factory=dict)
    privacy: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON line, with NaN written as ``null`` (``privacy`` only under DP)."""
        line: dict[str, Any] = {
            Record.ROUND: self.rnd,
            Record.ARM: self.arm,
            Record.GLOBAL: json_metrics(self.global_metrics),
            Record.PER_SITE: {s: json_metrics(m) for s, m in sorted(self.per_site.items())},
            Record.SITE_MEAN: json_metrics(self.site_mean),
            Record.VAL: json_metrics(self.val),
            Record.WALL_S: round(self.wall_s, 6),
            Record.BYTES_DOWN: self.bytes_down,
            Record.BYTES_UP: self.bytes_up,
            Record.SITES_SAMPLED: list(self.sites_sampled),
            Record.SITES_FAILED: dict(sorted(self.sites_failed.items())),
            Record.STRATEGY: dict(self.strategy),
        }
        if self.privacy:
            line[Record.PRIVACY] = dict(self.privacy)
        return line


def json_metrics(metrics: Metrics | None) -> dict[str, float | None] | None:
    """Metrics ready for JSON: sorted, NaN and infinities written as ``None``."""
    if metrics is None:
        return None
    return {k: (float(v) if math.isfinite(v) else None) for k, v in sorted(metrics.items())}


class RoundObserver(Protocol):
    """Receives each finished round: records it, checkpoints it, shows progress."""

    def on_round(self, record: RoundRecord, params: Params, state: StateRecord) -> None:
        """Called once per round after evaluation."""
        ...


class AggregationRecorder(Protocol):
    """Keeps what each round aggregated, so it can be replayed without training."""

    def on_aggregate(
        self,
        rnd: int,
        *,
        state_before: StateRecord,
        updates: Sequence[ClientUpdate],
        params: Params,
    ) -> None:
        """Called once round ``rnd`` aggregated ``updates`` from ``state_before`` to ``params``."""
        ...


@dataclass(frozen=True)
class ResumePoint:
    """Where a resumed run picks up: the last finished round and what it left.

    Parameters
    ----------
    completed_round
        The last round whose record and checkpoint were written.
    params
        The global weights after that round.
    state
        The strategy state after that round.
    """

    completed_round: int
    params: Params
    state: StateRecord


@dataclass(frozen=True)
class FinalScoring:
    """What the last round's evaluation also asks of every site, so the final model is scored once.

    Parameters
    ----------
    ci_resamples
        Bootstrap resamples of each site's test-split intervals (0: none).
    ci_seed
        Seed of those resamples.
    histogram_bins
        Bins of the score histograms on the test and validation splits (0: none).
    """

    ci_resamples: int
    ci_seed: int
    histogram_bins: int


@dataclass(frozen=True)
class FinalScores:
    """Every site's scores of the final model, as the last round asked for them."""

    test: Mapping[str, EvaluateResult]
    val: Mapping[str, EvaluateResult]


@dataclass(frozen=True)
class FederationResult:
    """The final global weights, the final strategy state and every round's record.

    ``final`` holds the last round's site scores when that round ran here with
    a :class:`FinalScoring` (``None`` otherwise, e.g. resumed after the last round).
    """

    params: Params
    state: StateRecord
    history: Sequence[RoundRecord]
    final: FinalScores | None = None


def sample_sites(
    *, sites: Sequence[str], fraction: float, min_sites: int, seed: int, rnd: int
) -> list[str]:
    """Sample ``max(min_sites, ceil(fraction * n))`` sites, sorted, seeded per round."""
    ordered = sorted(sites)
    if len(ordered) < min_sites:
        raise ConfigError(
            f"federation.min_sites is {min_sites} but only {len(ordered)} sites exist; "
            "lower min_sites or add sites"
        )
    k = min(len(ordered), max(min_sites, math.ceil(fraction * len(ordered))))
    if k == len(ordered):
        return ordered
    rng = generator(seed=seed, party="server", rnd=rnd, purpose="sample")
    chosen = rng.choice(len(ordered), size=k, replace=False)
    return sorted(ordered[i] for i in chosen)


def weighted_site_mean(results: Mapping[str, EvaluateResult]) -> dict[str, float]:
    """Example-weighted mean of per-site metrics; a metric a site could not compute is skipped."""
    return mean_metrics(
        [(float(r.num_examples), r.metrics) for _, r in sorted(results.items()) if r.num_examples]
    )


def _validate_update(
    update: ClientUpdate, reference: Params, *, allow_partial: bool
) -> ClientError | None:
    """The server's own check of a received update; never aggregate what fails it."""
    try:
        where = f"update from site '{update.site}'"
        expected = reference
        if allow_partial:
            unknown = sorted(set(update.params) - set(reference))
            if unknown:
                raise SchemaError(f"{where}: unexpected tensor '{unknown[0]}'")
            expected = {k: v for k, v in reference.items() if k in update.params}
        check_same_schema(expected=expected, actual=update.params, where=where)
        check_finite(update.params, where=f"update from site '{update.site}'")
        check_finite(update.extras, where=f"extras from site '{update.site}'")
    except FlmiError as exc:
        return ClientError(site=update.site, code=ErrorCode.REJECTED_BY_SERVER, message=str(exc))
    if update.num_examples < 1:
        return ClientError(
            site=update.site,
            code=ErrorCode.REJECTED_BY_SERVER,
            message=f"update from site '{update.site}' claims {update.num_examples} examples",
        )
    return None


def split_replies(
    replies: Mapping[str, TrainReply], reference: Params, *, allow_partial: bool = False
) -> tuple[list[ClientUpdate], dict[str, ClientError]]:
    """Separate valid updates from errors, rejecting invalid updates with a logged reason.

    ``allow_partial`` accepts updates that leave out tensors their site keeps
    local (personalised strategies); every tensor sent must still fit.
    """
    updates: list[ClientUpdate] = []
    errors: dict[str, ClientError] = {}
    for site in sorted(replies):
        reply = replies[site]
        if isinstance(reply, ClientError):
            errors[site] = reply
            log.warning("site %s failed: %s (%s)", site, reply.code, reply.message)
            continue
        rejected = _validate_update(reply, reference, allow_partial=allow_partial)
        if rejected is not None:
            errors[site] = rejected
            log.warning("rejected update from %s: %s", site, rejected.message)
            continue
        updates.append(reply)
    return updates, errors


def evaluate_sites(
    *,
    runtime: Runtime,
    params: Params,
    rnd: int,
    split: Split,
    personal: bool = False,
    site_params: Callable[[str], Params] | None = None,
    hparams: Mapping[str, HParamValue] | None = None,
    ci_resamples: int = 0,
    ci_seed: int = 0,
    histogram_bins: int = 0,
) -> tuple[dict[str, EvaluateResult], dict[str, ClientError]]:
    """Ask every site to score a model on its own ``split``.

    The model is ``params``, or ``site_params(site)`` when the strategy keeps
    one model per site or group (IFCA's clusters); with ``personal`` the site
    first restores what it keeps to itself.
    """
    replies = runtime.evaluate(
        {
            site: EvaluateInstruction(
                rnd=rnd,
                params=site_params(site) if site_params is not None else params,
                split=split,
                personal=personal,
                hparams=hparams or {},
                ci_resamples=ci_resamples,
                ci_seed=ci_seed,
                histogram_bins=histogram_bins,
            )
            for site in runtime.site_names()
        }
    )
    results = {s: r for s, r in replies.items() if isinstance(r, EvaluateResult)}
    errors = {s: r for s, r in replies.items() if isinstance(r, ClientError)}
    for site, err in sorted(errors.items()):
        log.warning("site %s could not evaluate: %s (%s)", site, err.code, err.message)
    return results, errors


def is_personalised(strategy: object) -> bool:
    """Whether ``strategy`` scores each site with its own model (and has no central score)."""
    return capabilities_of(strategy).personalised


def evaluate_strategy_sites(
    *,
    strategy: Strategy[Any],
    state: Any,
    runtime: Runtime,
    params: Params,
    rnd: int,
    split: Split,
    ci_resamples: int = 0,
    ci_seed: int = 0,
    histogram_bins: int = 0,
) -> tuple[dict[str, EvaluateResult], dict[str, ClientError]]:
    """Score every site the way ``strategy`` defines its models.

    Personalised strategies have each site restore what it keeps to itself,
    strategies with one model per site or group send each site its own, and
    strategies with evaluation settings (local fine-tuning) send those along,
    as the strategy's :class:`~flmi.core.strategy.Capabilities` declare.
    """
    caps = capabilities_of(strategy)
    return evaluate_sites(
        runtime=runtime,
        params=params,
        rnd=rnd,
        split=split,
        personal=caps.personalised,
        site_params=(
            functools.partial(caps.site_params, state) if caps.site_params is not None else None
        ),
        hparams=caps.evaluation_hparams,
        ci_resamples=ci_resamples,
        ci_seed=ci_seed,
        histogram_bins=histogram_bins,
    )


def run_federation(
    *,
    strategy: Strategy[Any],
    runtime: Runtime,
    initial_params: Params,
    plan: FederationPlan,
    observer: RoundObserver,
    arm: str = Arm.FEDERATED,
    eval_runtime: Runtime | None = None,
    evaluate_central: Callable[[Params], Metrics] | None = None,
    count_bytes: bool = True,
    resume: ResumePoint | None = None,
    secure: SecureAggregation | None = None,
    final_scoring: FinalScoring | None = None,
    recorder: AggregationRecorder | None = None,
) -> FederationResult:
    """Run every round of one arm and return the final weights.

    Parameters
    ----------
    strategy
        The server-side algorithm.
    runtime
        Reaches the training sites.
    initial_params
        Global weights before round 1.
    plan
        Rounds, sampling and evaluation schedule.
    observer
        Records, checkpoints and displays each finished round.
    arm
        The arm name written in every record.
    eval_runtime
        Sites that score the global model on their own splits (default: ``runtime``).
    evaluate_central
        Scores weights on the central test set; simulation only, ``None`` in a deployment.
    count_bytes
        Count tensor payload bytes that travel (off for baselines, where nothing does).
    resume
        Continue after a checkpointed round (``initial_params`` then only fixes the schema).
    secure
        Aggregate through a secure protocol (secure sum or homomorphic
        encryption): sites hold their updates back, ``runtime`` carries the
        protocol's stages (it must be a :class:`StagedExchange`), and the
        strategy receives one update equivalent to the sum, never a site's own.
    final_scoring
        The last round also returns the final scores (:attr:`FederationResult.final`).
    recorder
        Keeps each round's updates, state and result (``[record] updates``; not with secure).
    """
    _check_secure_runtime(secure, runtime)
    setting = _ArmSetting(
        strategy=strategy,
        runtime=runtime,
        evaluators=eval_runtime if eval_runtime is not None else runtime,
        plan=plan,
        arm=arm,
        evaluate_central=evaluate_central,
        count_bytes=count_bytes,
        secure=secure,
        personal=is_personalised(strategy),
        final_scoring=final_scoring,
        recorder=recorder,
    )
    state, params, first = _starting_point(strategy, initial_params, resume)
    history: list[RoundRecord] = []
    failed_rounds, final = 0, None  # final: set by the last round, when it runs here
    for rnd in range(first, plan.rounds + 1):
        trained, record, final = _play_round(rnd, setting, state, params)
        state, params, stalled = trained.state, trained.params, trained.stalled
        if stalled is not None:
            failed_rounds += 1
            log.error("%s", stalled)
        history.append(record)
        observer.on_round(record, params, strategy.state_to_record(state))
        if stalled is not None and failed_rounds >= plan.max_failed_rounds:
            raise RoundFailedError(_stop_message(stalled, failed_rounds, plan.max_failed_rounds))
    return FederationResult(
        params=params, state=strategy.state_to_record(state), history=history, final=final
    )


def _play_round(
    rnd: int, setting: _ArmSetting, state: Any, params: Params
) -> tuple[_Trained, RoundRecord, FinalScores | None]:
    """Train and score round ``rnd``; its record, and the final scores if it is the last round."""
    started = time.perf_counter()
    trained = _train_round(rnd, setting, state, params)
    scores = _score_round(rnd, setting, trained.state, trained.params)
    wall_s = time.perf_counter() - started
    record = _round_record(
        rnd, setting, trained.state, scores=scores, wall_s=wall_s, trained=trained
    )
    final = (
        FinalScores(test=scores[1], val=scores[2])
        if rnd == setting.plan.rounds and setting.final_scoring is not None
        else None
    )
    return trained, record, final


def _starting_point(
    strategy: Strategy[Any], initial_params: Params, resume: ResumePoint | None
) -> tuple[Any, Params, int]:
    """The strategy state, global weights and first round: fresh, or after a checkpoint."""
    if resume is None:
        return strategy.init(initial_params), initial_params, 1
    check_same_schema(expected=initial_params, actual=resume.params, where="checkpoint")
    state = strategy.state_from_record(resume.state)
    return state, resume.params, resume.completed_round + 1


@dataclass(frozen=True)
class _ArmSetting:
    """What stays fixed over one arm's rounds: the arguments of :func:`run_federation`."""

    strategy: Strategy[Any]
    runtime: Runtime
    evaluators: Runtime
    plan: FederationPlan
    arm: str
    evaluate_central: Callable[[Params], Metrics] | None
    count_bytes: bool
    secure: SecureAggregation | None
    personal: bool
    final_scoring: FinalScoring | None
    recorder: AggregationRecorder | None = None


def _check_secure_runtime(secure: SecureAggregation | None, runtime: Runtime) -> None:
    """A secure protocol needs a runtime that carries its stages."""
    if secure is not None and not isinstance(runtime, StagedExchange):
        raise ConfigError(
            f"privacy.aggregation = '{secure.name}' needs a runtime that carries protocol "
            f"stages; {type(runtime).__name__} does not"
        )


@dataclass(frozen=True)
class _Trained:
    """One round's training: who was asked, what travelled, and the model after it.

    ``stalled`` says why nothing was aggregated (``None`` when the round was);
    ``state`` and ``params`` are then the ones before the round.
    """

    sampled: list[str]
    instructions: Mapping[str, TrainInstruction]
    got: _Collected
    stalled: str | None
    state: Any
    params: Params


def _decoded(
    replies: Mapping[str, TrainReply], instructions: Mapping[str, TrainInstruction]
) -> Mapping[str, TrainReply]:
    """The replies with compressed updates decoded (see :mod:`flmi.compression.wire`)."""
    if not any(
        isinstance(r, ClientUpdate) and Extra.COMPRESSED in r.params for r in replies.values()
    ):
        return replies
    # Imported here: only a compressed round loads the codecs and their config table.
    from flmi.compression.wire import decompress_replies

    return decompress_replies(replies, instructions)


def _train_round(rnd: int, setting: _ArmSetting, state: Any, params: Params) -> _Trained:
    """Sample sites, send their instructions, check the replies and aggregate them."""
    strategy, runtime, plan = setting.strategy, setting.runtime, setting.plan
    secure, personal = setting.secure, setting.personal
    sampled = sample_sites(
        sites=runtime.site_names(),
        fraction=plan.fraction,
        min_sites=plan.min_sites,
        seed=plan.seed,
        rnd=rnd,
    )
    instructions = strategy.configure(rnd, state, sampled)
    replies = runtime.train(instructions)
    sizes = {s: r.payload_bytes() for s, r in replies.items() if isinstance(r, ClientUpdate)}
    replies = _decoded(replies, instructions)
    got = _collect(
        rnd, replies, params, runtime=runtime, secure=secure, personal=personal, sizes=sizes
    )
    stalled = _stalled(rnd, got, sampled=sampled, min_sites=plan.min_sites)
    if stalled is None:
        state = _note_secure_round(rnd, strategy, state, replies, got, secure=secure)
        before = strategy.state_to_record(state) if setting.recorder is not None else None
        state, params = strategy.aggregate(rnd, state, got.updates)
        if setting.recorder is not None and before is not None:
            setting.recorder.on_aggregate(
                rnd, state_before=before, updates=got.updates, params=params
            )
    return _Trained(
        sampled=sampled,
        instructions=instructions,
        got=got,
        stalled=stalled,
        state=state,
        params=params,
    )


# A round's scores: central metrics, each site's test split, each site's validation split.
_Scores = tuple[Metrics | None, Mapping[str, EvaluateResult], Mapping[str, EvaluateResult]]


def _score_round(rnd: int, setting: _ArmSetting, state: Any, params: Params) -> _Scores:
    """Round ``rnd``'s scores when it is an evaluation round (the last one always is)."""
    plan, evaluate_central = setting.plan, setting.evaluate_central
    if rnd % plan.eval_every != 0 and rnd != plan.rounds:
        return None, {}, {}
    final = setting.final_scoring if rnd == plan.rounds else None
    per_site, val = _score_sites(setting.strategy, state, setting.evaluators, params, rnd, final)
    central = (
        evaluate_central(params) if evaluate_central is not None and not setting.personal else None
    )
    return central, per_site, val


def _round_record(
    rnd: int,
    setting: _ArmSetting,
    state: Any,
    *,
    scores: _Scores,
    wall_s: float,
    trained: _Trained,
) -> RoundRecord:
    """What round ``rnd`` gave: scores, traffic, sampled and failed sites, strategy state."""
    central, per_site, val = scores
    strategy, count_bytes, got = setting.strategy, setting.count_bytes, trained.got
    return RoundRecord(
        rnd=rnd,
        arm=setting.arm,
        global_metrics=central,
        per_site={s: r.metrics for s, r in per_site.items()},
        site_mean=weighted_site_mean(per_site),
        val=weighted_site_mean(val),
        wall_s=wall_s,
        bytes_down=(
            sum(i.payload_bytes() for i in trained.instructions.values()) + got.protocol_down
            if count_bytes
            else 0
        ),
        bytes_up=got.bytes_up if count_bytes else 0,
        sites_sampled=trained.sampled,
        sites_failed={s: e.code.value for s, e in got.errors.items()},
        strategy={
            k: v
            for k, v in strategy.state_to_record(state).meta.items()
            if k != Record.PRIVACY  # a DP wrapper's ledgers: reported under privacy
        },
        privacy=_privacy(strategy, state),
    )


def _score_sites(
    strategy: Strategy[Any],
    state: Any,
    runtime: Runtime,
    params: Params,
    rnd: int,
    final: FinalScoring | None,
) -> tuple[dict[str, EvaluateResult], dict[str, EvaluateResult]]:
    """Every site's scores on its test and on its validation split.

    With ``final`` the test scores carry bootstrap intervals and both carry
    score histograms; the metrics are the same either way.
    """
    bins = final.histogram_bins if final is not None else 0
    test, _ = evaluate_strategy_sites(
        strategy=strategy,
        state=state,
        runtime=runtime,
        params=params,
        rnd=rnd,
        split=Split.TEST,
        ci_resamples=final.ci_resamples if final is not None else 0,
        ci_seed=final.ci_seed if final is not None else 0,
        histogram_bins=bins,
    )
    val, _ = evaluate_strategy_sites(
        strategy=strategy,
        state=state,
        runtime=runtime,
        params=params,
        rnd=rnd,
        split=Split.VAL,
        histogram_bins=bins,
    )
    return test, val


@dataclass(frozen=True)
class _Collected:
    """A round's replies sorted out: the updates to aggregate and the sites that failed.

    ``contributors`` counts the sites whose updates ``updates`` hold (one
    summed update holds several under secure aggregation); ``bytes_up`` is
    what the server received (the updates, or the protocol's stages) and
    ``protocol_down`` what it sent in those stages; ``refused`` says why a
    secure aggregate was not used (empty when it was, or without one).
    """

    updates: list[ClientUpdate]
    errors: dict[str, ClientError]
    contributors: int
    bytes_up: int
    protocol_down: int = 0
    refused: str = ""


def _collect(
    rnd: int,
    replies: Mapping[str, TrainReply],
    params: Params,
    *,
    runtime: Runtime,
    secure: SecureAggregation | None,
    personal: bool,
    sizes: Mapping[str, int],
) -> _Collected:
    """Valid updates and errors, directly or through the secure protocol's stages.

    ``sizes`` holds each update's payload bytes as it arrived (compressed).
    """
    if secure is None:
        updates, errors = split_replies(replies, params, allow_partial=personal)
        return _Collected(
            updates=updates,
            errors=errors,
            contributors=len(updates),
            bytes_up=sum(sizes.get(u.site, u.payload_bytes()) for u in updates),
        )
    assert isinstance(runtime, StagedExchange)  # checked before round 1
    outcome = secure.aggregate(rnd=rnd, exchange=runtime, replies=replies, reference=params)
    updates, errors, refused = _secure_update(outcome, params, personal=personal)
    return _Collected(
        updates=updates,
        errors=errors,
        contributors=outcome.contributors if updates else 0,
        bytes_up=outcome.bytes_up,
        protocol_down=outcome.bytes_down,
        refused=refused,
    )


#: The most sites whose failure a stalled round's message spells out.
_REASONS_SHOWN = 5


def _stalled(rnd: int, got: _Collected, *, sampled: Sequence[str], min_sites: int) -> str | None:
    """Why round ``rnd`` aggregates nothing, leaving the model unchanged (``None``: it does not)."""
    if got.updates and got.contributors >= min_sites:
        return None
    reasons = [f"site '{s}': {e.code.value}: {e.message}" for s, e in sorted(got.errors.items())]
    if got.refused:
        reasons.insert(0, got.refused)
    shown = reasons[:_REASONS_SHOWN]
    if len(reasons) > len(shown):
        shown.append(f"and {len(reasons) - len(shown)} more")
    why = "; ".join(shown) if shown else "no site reported an error"
    return (
        f"round {rnd}: {got.contributors} of {len(sampled)} sampled sites gave a valid update, "
        f"fewer than federation.min_sites = {min_sites}, so the global model is left unchanged "
        f"({why})"
    )


def _stop_message(stalled: str, failed: int, allowed: int) -> str:
    rounds = "round" if failed == 1 else "rounds"
    return (
        f"{stalled}. The run stops: {failed} {rounds} aggregated nothing and "
        f"federation.max_failed_rounds = {allowed}. Fix what the sites report, or raise "
        "federation.max_failed_rounds to let a run go on past rounds that aggregate nothing; "
        "every round up to this one is recorded"
    )


def _note_secure_round(
    rnd: int,
    strategy: Strategy[Any],
    state: Any,
    replies: Mapping[str, TrainReply],
    got: _Collected,
    *,
    secure: SecureAggregation | None,
) -> Any:
    """``state`` with a secure round accounted for, if the strategy accounts for one."""
    note = capabilities_of(strategy).note_secure_round
    if secure is None or note is None:
        return state
    names = _contributor_names(replies, got.errors, expected=got.contributors)
    return note(rnd, state, reports={s: _metrics(replies[s]) for s in names}, contributors=names)


def _privacy(strategy: Strategy[Any], state: Any) -> Mapping[str, Any]:
    report = capabilities_of(strategy).privacy_record
    return report(state) if report is not None else {}


def _metrics(reply: TrainReply) -> Metrics:
    return reply.metrics if isinstance(reply, ClientUpdate) else {}


def _contributor_names(
    replies: Mapping[str, TrainReply], errors: Mapping[str, ClientError], *, expected: int
) -> list[str]:
    """The sites whose updates a secure aggregate holds: they trained and did not drop.

    If that does not match the protocol's count, every site that trained is
    returned, so that accounting errs on the side of counting a site.
    """
    trained = sorted(s for s, r in replies.items() if not isinstance(r, ClientError))
    kept = [s for s in trained if s not in errors]
    return kept if len(kept) == expected else trained


def _secure_update(
    outcome: SecureRound, reference: Params, *, personal: bool
) -> tuple[list[ClientUpdate], dict[str, ClientError], str]:
    """The protocol's one aggregate update, checked like any update, and the sites' errors.

    The third value says why there is no aggregate to use (empty if there is one).
    """
    errors = dict(outcome.errors)
    if outcome.update is None:
        return [], errors, "the secure aggregation protocol recovered no aggregate"
    rejected = _validate_update(outcome.update, reference, allow_partial=personal)
    if rejected is not None:
        log.warning("rejected the secure aggregate: %s", rejected.message)
        return [], errors, f"the secure aggregate was rejected: {rejected.message}"
    return [outcome.update], errors, ""


def mean_metrics(items: Sequence[tuple[float, Metrics]]) -> dict[str, float]:
    """Weighted mean of metric dicts; a NaN (a metric a site could not compute) is skipped."""
    names = sorted({k for _, m in items for k in m})
    out: dict[str, float] = {}
    for name in names:
        pairs = [(w, m[name]) for w, m in items if name in m and not math.isnan(m[name])]
        total = sum(w for w, _ in pairs)
        out[name] = float(np.sum([w * v for w, v in pairs]) / total) if total else float("nan")
    return out
