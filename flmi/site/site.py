"""A hospital: a name, its private data, a task, and the bounds it allows.

This is the only code that touches a site's data. It takes an instruction,
checks it against the site's own bounds, trains, validates its own update and
returns a :class:`ClientUpdate` (or a :class:`ClientError`): nothing else
leaves. Error messages that leave carry codes and short texts, never a path, a
file name or patient data; details go to the site's local log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from flmi.compression.wire import STATE as COMPRESSION_STATE
from flmi.compression.wire import compress_delta, compressor_from_hparams
from flmi.core.errors import NonFiniteError, SchemaError
from flmi.core.keys import Extra, HParam, SemiSupervised, Split, TrainMetric
from flmi.core.messages import (
    ClientError,
    ClientUpdate,
    ErrorCode,
    EvaluateInstruction,
    EvaluateReply,
    EvaluateResult,
    TrainInstruction,
    TrainReply,
    UpdateKind,
)
from flmi.core.params import Params, check_finite, subtract
from flmi.core.rng import derive_seed
from flmi.core.rng import generator as seeded_generator
from flmi.data.arrays import SiteSplits
from flmi.privacy.dp_sgd import SampleDPSettings
from flmi.privacy.noise_source import NoiseSource
from flmi.privacy.site_noise import SiteNoise
from flmi.site.algorithms.base import ClientStep, LocalUpdate, RoundContext
from flmi.site.algorithms.local_layers import restore_local
from flmi.site.algorithms.registry import start_round
from flmi.site.hooks import merge_hooks
from flmi.site.small_cells import merge_small_cells, withhold_small_rates
from flmi.site.state import SiteState, has_saved_state
from flmi.tasks.base import (
    CountsRateCells,
    FitHooks,
    FitResult,
    HParamError,
    LocalTraining,
    Task,
    matches_prefix,
)
from flmi.tasks.semisup import SemiSupervisedTask
from flmi.tasks.torch_params import (
    float_entries,
    integer_buffers,
    load_params,
    params_copy,
    restore_integer_buffers,
)

log = logging.getLogger("flmi.site")
#: The training metrics a site sends under DP: counts its update's num_examples reveals anyway.
_COUNTS = frozenset({TrainMetric.NUM_LABELED.value, TrainMetric.NUM_UNLABELED.value})


@dataclass(frozen=True)
class SitePolicy:
    """The bounds a site runs within, whatever the server asks.

    Parameters
    ----------
    max_local_epochs
        Most local epochs the site accepts (``None``: no bound).
    max_local_steps
        Most local optimiser steps the site accepts (``None``: no bound).
    min_count
        Smallest non-zero count of patients a cell of a score histogram the
        site sends may hold (``[report] min_count``); smaller cells are merged
        with their neighbours at the site (see :mod:`flmi.site.small_cells`).
    """

    max_local_epochs: int | None = None
    max_local_steps: int | None = None
    min_count: int = 5

    def __post_init__(self) -> None:
        if self.min_count < 1:
            raise ValueError(
                f"min_count must be at least 1, got {self.min_count}; set [report] min_count"
            )

    def check(self, training: LocalTraining) -> None:
        """Raise :class:`HParamError` if ``training`` exceeds a bound."""
        if self.max_local_epochs is not None and training.local_epochs > self.max_local_epochs:
            raise HParamError(
                f"local_epochs = {training.local_epochs} exceeds this site's bound of "
                f"{self.max_local_epochs}"
            )
        if self.max_local_steps is not None and training.local_steps > self.max_local_steps:
            raise HParamError(
                f"local_steps = {training.local_steps} exceeds this site's bound of "
                f"{self.max_local_steps}"
            )


class Site:
    """One hospital's side of the federation.

    Parameters
    ----------
    name
        The site's name, as the server knows it.
    data
        The site's private train, validation and test splits.
    task
        Model, local training and metrics.
    seed
        Run seed; each round draws from its own generator for (seed, site, round).
    device
        Where local training runs.
    policy
        Bounds the site enforces on every instruction.
    state_dir
        Where the site saves its :class:`SiteState` (``None``: keep it in memory);
        nothing is written while the state holds nothing.
    resume_round
        When resuming after round ``r``, load the state as of round ``r`` at the
        latest (``None``: the newest saved).
    model
        A model to work in, shared by sites that run one after another in one
        process (simulation), so memory does not grow with the number of sites.
        The site loads every float tensor before each use and keeps its own
        integer buffers, so nothing passes between sites through it.
        ``None``: the site builds its own.
    noise
        Where the site's privacy noise (DP-SGD, its share of DP-FedAvg's)
        comes from. ``None``: fresh OS randomness nobody else can regenerate
        (:mod:`flmi.privacy.noise_source`); the site decides this itself, never
        the server.
    """

    def __init__(
        self,
        *,
        name: str,
        data: SiteSplits,
        task: Task,
        seed: int,
        device: torch.device,
        policy: SitePolicy | None = None,
        state_dir: Path | None = None,
        model: torch.nn.Module | None = None,
        resume_round: int | None = None,
        noise: NoiseSource | None = None,
    ) -> None:
        self.name = name
        self._data = data
        self._task = task
        self._seed = seed
        self._device = device
        self._policy = policy if policy is not None else SitePolicy()
        self._noise = noise if noise is not None else NoiseSource()
        self._state_dir = state_dir
        self._saved = state_dir is not None and has_saved_state(state_dir)
        self.state = (
            SiteState.load(state_dir, max_round=resume_round)
            if state_dir is not None
            else SiteState()
        )
        self._model = model if model is not None else task.build_model(seed=seed).to(device)
        self._int_buffers = integer_buffers(self._model)

    def _load(self, params: Params, *, where: str) -> None:
        """Put ``params`` and this site's own integer buffers into the working model."""
        load_params(self._model, params, where=where)
        restore_integer_buffers(self._model, self._int_buffers)

    @property
    def num_train(self) -> int:
        """Labeled training examples this site holds (a count is all the server learns)."""
        return len(self._data.train)

    @property
    def num_unlabeled(self) -> int:
        """Unlabeled training images this site holds."""
        return self._data.num_unlabeled

    def _uses_unlabeled(self, training: LocalTraining) -> bool:
        """Whether this round's training learns from the site's unlabeled images."""
        return training.semi_supervised != SemiSupervised.NONE and self.num_unlabeled > 0

    def _examples(self, training: LocalTraining) -> int:
        """The most examples a round can train on: labeled, plus unlabeled when used."""
        return self.num_train + (self.num_unlabeled if self._uses_unlabeled(training) else 0)

    def _trained_on(self, result: FitResult) -> int:
        """The honest count of examples a round trained on: the update's ``num_examples``.

        Labeled examples, plus the unlabeled images that got a pseudo-label at
        least once (the others taught nothing), so FedAvg-like rules weight an
        unlabeled image the site learnt from like a labeled one.
        """
        return self.num_train + int(result.metrics.get(TrainMetric.NUM_UNLABELED, 0))

    def _error(self, code: ErrorCode, message: str) -> ClientError:
        return ClientError(site=self.name, code=code, message=message)

    def train(self, instruction: TrainInstruction) -> TrainReply:
        """Run one round of local training and return the update, or an error.

        The common path: parse and check the instruction, start the client
        algorithms it needs (:mod:`flmi.site.algorithms`), train once with
        their hooks, let them post-process the update, validate it, keep the
        site's new state and send the update.
        """
        try:
            training = LocalTraining.from_hparams(instruction.hparams)
            self._policy.check(training)
            context = RoundContext(
                instruction=instruction, training=training, state=self.state, noise=self._noise
            )
            steps = start_round(context)
            site_noise = SiteNoise.from_hparams(instruction.hparams)
        except HParamError as exc:
            log.warning("site %s refused round %d: %s", self.name, instruction.rnd, exc)
            return self._error(ErrorCode.HPARAM_REFUSED, str(exc))
        try:
            refused = self._refuse_data(training)
            if refused is not None:
                return refused
            return self._train_with(instruction, training, steps=steps, site_noise=site_noise)
        finally:
            for step in steps:
                step.close()

    def _refuse_data(self, training: LocalTraining) -> ClientError | None:
        """An error when this site's data cannot serve the round's training, else ``None``."""
        if self._examples(training) == 0:
            return self._error(
                ErrorCode.DATA_ERROR,
                "this site holds no labeled training example; it can take part only with "
                "semi_supervised = 'fixmatch' or 'pseudo_label'",
            )
        if self._uses_unlabeled(training) and not isinstance(self._task, SemiSupervisedTask):
            return self._error(
                ErrorCode.HPARAM_REFUSED,
                f"task '{self._task.name}' cannot learn from unlabeled images; "
                "set semi_supervised = 'none'",
            )
        if self.num_unlabeled and not self._uses_unlabeled(training):
            log.info(
                "site %s: %d unlabeled training images left unused (semi_supervised = 'none')",
                self.name,
                self.num_unlabeled,
            )
        return None

    def _train_with(
        self,
        instruction: TrainInstruction,
        training: LocalTraining,
        *,
        steps: list[ClientStep],
        site_noise: SiteNoise | None,
    ) -> TrainReply:
        """Load, train with the steps' hooks, post-process, validate, keep the state."""
        view = _RoundView(site=self, training=training, rnd=instruction.rnd)
        try:
            self._load(instruction.params, where="instruction from the server")
            hooks = [h for step in steps if (h := step.before_fit(view)) is not None]
        except SchemaError as exc:
            return self._error(ErrorCode.SCHEMA_MISMATCH, str(exc))
        except HParamError as exc:
            return self._error(ErrorCode.HPARAM_REFUSED, str(exc))
        try:
            result = self._fit(
                training,
                rnd=instruction.rnd,
                purpose="train",
                hooks=merge_hooks(hooks),
                unlabeled=self._uses_unlabeled(training),
            )
        except Exception:  # a site reports failures as data, never as a crash of the loop
            log.exception("site %s: local training failed in round %d", self.name, instruction.rnd)
            return self._error(ErrorCode.TRAINING_FAILED, "local training failed; see the site log")
        if self._trained_on(result) == 0:
            log.info("site %s: no confident pseudo-label in round %d", self.name, instruction.rnd)
            return self._error(
                ErrorCode.DATA_ERROR,
                "no unlabeled image got a pseudo-label this round (pseudo_label_threshold, "
                "or pseudo_label_quota too small for the site): nothing learnt",
            )
        update = LocalUpdate(
            params=params_copy(self._model),
            extras={},
            tensors=dict(self.state.tensors),
            meta=dict(self.state.meta),
            metrics=dict(result.metrics),
        )
        try:
            for step in steps:
                update = step.after_fit(view, update, result)
        except Exception:  # reported as data, like the training above
            log.exception("site %s: a client algorithm failed after training", self.name)
            return self._error(
                ErrorCode.TRAINING_FAILED,
                "a client algorithm failed after training; see the site log",
            )
        return self._send(instruction, update, result=result, site_noise=site_noise)

    def _send(
        self,
        instruction: TrainInstruction,
        update: LocalUpdate,
        *,
        result: FitResult,
        site_noise: SiteNoise | None,
    ) -> TrainReply:
        """Noise the update if asked, check it is finite, keep the new state, send it."""
        params, extras = update.params, dict(update.extras)
        kind = UpdateKind.FULL
        metrics = dict(update.metrics)
        if site_noise is not None or SampleDPSettings.from_hparams(instruction.hparams) is not None:
            # Under DP the training loss and rates are un-noised functions of the data that
            # epsilon does not cover: they stay in the site's log. The two counts add nothing
            # to num_examples (labeled = the split's size, unlabeled = num_examples - it); the
            # DP-SGD report (data-independent accounting) stays.
            log.info("site %s round %d training metrics: %s", self.name, instruction.rnd, metrics)
            metrics = {k: v for k, v in metrics.items() if k in _COUNTS or k not in result.metrics}
        if site_noise is not None:
            # An untrusted server: only the clipped, noised change leaves the site.
            sent = {k: v for k, v in instruction.params.items() if k in params}
            rng = self._noise.numpy_generator(party=self.name, rnd=instruction.rnd, purpose="dp")
            params, bit = site_noise.apply(subtract(params, sent), rng=rng)
            extras.update(bit)
            kind = UpdateKind.DELTA
        try:
            check_finite(params, where=f"site '{self.name}' update")
            check_finite(extras, where=f"site '{self.name}' extras")
        except NonFiniteError as exc:
            log.error("site %s refuses to send round %d: %s", self.name, instruction.rnd, exc)
            return self._error(ErrorCode.NON_FINITE_UPDATE, str(exc))
        tensors = dict(update.tensors)
        try:
            compressor = compressor_from_hparams(instruction.hparams)
        except SchemaError as exc:
            return self._error(ErrorCode.HPARAM_REFUSED, str(exc))
        if compressor is not None:
            # After any DP noise: compression is post-processing of what DP released.
            if kind is UpdateKind.FULL:
                sent = {k: v for k, v in instruction.params.items() if k in params}
                params = subtract({k: params[k] for k in sent}, sent)
                kind = UpdateKind.DELTA
            # Rounding draws protect nothing (they come after any DP noise): they are
            # seeded like training, so a compressed run repeats for the same seed.
            rng = seeded_generator(
                seed=self._seed, party=self.name, rnd=instruction.rnd, purpose="compression"
            )
            params, own = compress_delta(
                compressor=compressor, delta=params, state=self.state.tensors, rng=rng
            )
            tensors = {k: v for k, v in tensors.items() if not k.startswith(COMPRESSION_STATE)}
            tensors.update(own)
        self._int_buffers = integer_buffers(self._model)
        self.state = SiteState(tensors=tensors, meta={**update.meta, "round": instruction.rnd})
        # A site with nothing to keep writes nothing (no file to fsync each round);
        # once it has saved a round it saves every one, so no older file outlives it.
        if self._state_dir is not None and (self._saved or not self.state.holds_nothing):
            self.state.save(self._state_dir)
            self._saved = True
        return ClientUpdate(
            site=self.name,
            params=params,
            kind=kind,
            num_examples=self._trained_on(result),
            num_steps=result.num_steps,
            metrics=metrics,
            extras=extras,
        )

    def _finetune(self, instruction: EvaluateInstruction, epochs: int) -> ClientError | None:
        """Fine-tune the loaded weights on this site's training split before scoring them."""
        settings = {
            **instruction.hparams,
            HParam.LOCAL_EPOCHS: epochs,
            HParam.LOCAL_STEPS: 0,
        }
        settings.pop(HParam.FINETUNE_EPOCHS, None)
        try:
            training = LocalTraining.from_hparams(settings)
            self._policy.check(training)
        except HParamError as exc:
            return self._error(ErrorCode.HPARAM_REFUSED, str(exc))
        self._fit(training, rnd=instruction.rnd, purpose="finetune", hooks=None)
        return None

    def _fit(
        self,
        training: LocalTraining,
        *,
        rnd: int,
        purpose: str,
        hooks: FitHooks | None,
        unlabeled: bool = False,
    ) -> FitResult:
        """Train the working model on the site's training split, seeded per site and round.

        With ``unlabeled`` the site's unlabeled images take part too
        (semi-supervised training). Tensors under ``training.freeze`` are not
        trained, and after training hold exactly the values they held before.
        """
        generator = torch.Generator().manual_seed(
            derive_seed(seed=self._seed, party=self.name, rnd=rnd, purpose=purpose)
        )
        frozen = {
            name: value.detach().clone()
            for name, value in float_entries(self._model).items()
            if matches_prefix(name, training.freeze)
        }
        grads = {name: p.requires_grad for name, p in self._model.named_parameters()}
        for name, param in self._model.named_parameters():
            param.requires_grad_(grads[name] and name not in frozen)
        try:
            if unlabeled:
                result = self._fit_unlabeled(training, generator=generator, hooks=hooks)
            else:
                result = self._task.fit(
                    model=self._model,
                    data=self._data.train,
                    training=training,
                    generator=generator,
                    device=self._device,
                    hooks=hooks,
                )
        finally:
            for name, param in self._model.named_parameters():
                param.requires_grad_(grads[name])
            entries = float_entries(self._model)
            with torch.no_grad():
                for name, value in frozen.items():
                    entries[name].copy_(value)
        self._model.zero_grad(set_to_none=True)  # free gradient memory between uses
        return result

    def _fit_unlabeled(
        self, training: LocalTraining, *, generator: torch.Generator, hooks: FitHooks | None
    ) -> FitResult:
        """Semi-supervised local training on the labeled split and the unlabeled images."""
        if not isinstance(self._task, SemiSupervisedTask) or self._data.unlabeled is None:
            raise HParamError(
                f"task '{self._task.name}' cannot learn from unlabeled images; "
                "set semi_supervised = 'none'"
            )
        return self._task.fit_semi_supervised(
            model=self._model,
            labeled=self._data.train,
            unlabeled=self._data.unlabeled,
            training=training,
            generator=generator,
            device=self._device,
            hooks=hooks,
        )

    def _prefixed(self, prefix: str) -> Params:
        """This site's state tensors under ``prefix``, with the prefix removed."""
        return {k[len(prefix) :]: v for k, v in self.state.tensors.items() if k.startswith(prefix)}

    def evaluate(self, instruction: EvaluateInstruction) -> EvaluateReply:
        """Score the given weights on one of this site's own splits."""
        if instruction.split not in {s.value for s in Split}:
            return self._error(ErrorCode.INTERNAL, f"unknown split '{instruction.split}'")
        data = {
            Split.TRAIN.value: self._data.train,
            Split.VAL.value: self._data.val,
            Split.TEST.value: self._data.test,
        }[instruction.split]
        try:
            self._load(instruction.params, where="evaluation request")
        except SchemaError as exc:
            return self._error(ErrorCode.SCHEMA_MISMATCH, str(exc))
        if instruction.personal:
            personal = self._prefixed(Extra.PERSONAL)
            if personal:
                self._load(personal, where="personal model")
            restore_local(self._model, self._prefixed(Extra.LOCAL))
        epochs = int(instruction.hparams.get(HParam.FINETUNE_EPOCHS, 0))
        if epochs > 0:
            refused = self._finetune(instruction, epochs)
            if refused is not None:
                return refused
        metrics = self._task.evaluate(model=self._model, data=data, device=self._device)
        ci = self._task.confidence_intervals(
            model=self._model,
            data=data,
            device=self._device,
            resamples=instruction.ci_resamples,
            seed=derive_seed(
                seed=instruction.ci_seed, party=self.name, rnd=instruction.rnd, purpose="ci"
            ),
        )
        if isinstance(self._task, CountsRateCells):
            # No rate whose cells (rate times its denominator) are small counts leaves the site.
            metrics, ci, _ = withhold_small_rates(
                metrics=metrics,
                ci=ci,
                cells=self._task.rate_cells(model=self._model, data=data, device=self._device),
                min_count=self._policy.min_count,
            )
        raw = (
            self._task.score_histogram(
                model=self._model, data=data, device=self._device, bins=instruction.histogram_bins
            )
            if instruction.histogram_bins > 0
            else None
        )
        # No cell under min_count leaves the site: small cells are merged here, or none is sent.
        histogram = (
            merge_small_cells(raw, min_count=self._policy.min_count) if raw is not None else None
        )
        return EvaluateResult(
            site=self.name,
            split=instruction.split,
            num_examples=len(data),
            metrics=metrics,
            ci=ci,
            histogram=histogram,
            histogram_withheld=raw is not None and histogram is None,
        )


class _RoundView:
    """The site as its client algorithms see it during one round (:class:`LocalSite`)."""

    def __init__(self, *, site: Site, training: LocalTraining, rnd: int) -> None:
        self._site = site
        self._training = training
        self._rnd = rnd

    @property
    def model(self) -> torch.nn.Module:
        """The site's working model."""
        return self._site._model

    def load(self, params: Params, *, where: str) -> None:
        """Load ``params`` and the site's own integer buffers into the working model."""
        self._site._load(params, where=where)

    def fit(self, *, purpose: str, hooks: FitHooks | None) -> FitResult:
        """Train the working model on the labeled training split with the round's settings."""
        return self._site._fit(self._training, rnd=self._rnd, purpose=purpose, hooks=hooks)

    def train_loss(self) -> float:
        """The working model's mean loss on the training split."""
        site = self._site
        metrics = site._task.evaluate(model=site._model, data=site._data.train, device=site._device)
        return float(metrics["loss"])
