"""Sample-level DP-SGD in a site's local training, through Opacus.

Each step draws a Poisson sample of the site's training examples (every
example independently with probability ``q``, as Opacus's
``UniformWithReplacementSampler`` does), clips each example's gradient to
``max_grad_norm``, sums, and adds Gaussian noise of std
``noise_multiplier * max_grad_norm`` (Opacus's ``GradSampleModule`` and
``DPOptimizer``). The accountant is attached to the optimiser as Opacus
attaches it: it records the noise multiplier and sample rate of every step the
optimiser actually takes. The noise comes from the site's
:class:`flmi.privacy.noise_source.NoiseSource`: by default a generator whose
state is OS randomness, refilled before every step, with Opacus's
``secure_mode`` on; never the run seed. The site keeps the accountant's history in its
:class:`flmi.site.state.SiteState`, so a resumed run continues the accounting.

Opacus wraps the model and names its parameters ``_module.<name>``; those names
stay inside this module: the site reads and sends the unwrapped model's
``state_dict`` names only.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from flmi.core.errors import ConfigError
from flmi.core.keys import DPMode, HParam, PrivacyKey
from flmi.core.messages import HParamValue
from flmi.privacy.accounting import ACCOUNTANTS, Ledger, noise_for_epsilon
from flmi.privacy.noise_source import NoiseSource
from flmi.tasks.base import HParamError, LocalTraining, PrivateSession

# Opacus's hooks on a model whose input needs no gradient make torch say so at every step.
warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)


def check_dp_model(model: torch.nn.Module, *, where: str = "task.model") -> None:
    """Refuse a model Opacus cannot train with per-example gradients (BatchNorm, ...).

    Raises
    ------
    ConfigError
        Naming each offending layer and why, from Opacus's ``ModuleValidator``.
    """
    from opacus.validators import ModuleValidator

    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        details = "; ".join(str(e) for e in errors)
        raise ConfigError(
            f"{where} cannot be trained with DP-SGD (privacy.dp = 'sample'): {details}. "
            "BatchNorm mixes the examples of a batch, so per-example gradients do not exist; "
            "use a model with GroupNorm (flmi's small_cnn) or set privacy.dp = 'none'"
        )


def steps_per_round(*, num_examples: int, training: LocalTraining) -> int:
    """Optimiser steps of one round: ``local_steps``, or epochs of ``ceil(n / batch)`` steps."""
    if training.local_steps > 0:
        return training.local_steps
    return training.local_epochs * math.ceil(num_examples / training.batch_size)


def sample_rate(*, num_examples: int, batch_size: int) -> float:
    """Poisson sample rate ``1 / ceil(n / batch)``, as Opacus derives it from a data loader."""
    return 1.0 / math.ceil(num_examples / batch_size)


@dataclass(frozen=True)
class SampleDPSettings:
    """DP-SGD settings as an instruction carries them.

    Parameters
    ----------
    noise_multiplier
        Noise std over ``max_grad_norm`` (ignored when ``target_epsilon`` is set).
    max_grad_norm
        Bound on each example's gradient norm.
    delta
        The delta epsilon is reported at.
    accountant
        ``"rdp"`` or ``"prv"`` (Opacus's accountants).
    target_epsilon
        If positive, the noise multiplier is chosen by Opacus to spend this
        epsilon after ``rounds`` rounds.
    rounds
        Rounds the run plans (only used with ``target_epsilon``).
    """

    noise_multiplier: float
    max_grad_norm: float
    delta: float
    accountant: str
    target_epsilon: float = 0.0
    rounds: int = 0

    @classmethod
    def from_hparams(cls, hparams: Mapping[str, HParamValue]) -> SampleDPSettings | None:
        """The settings if the instruction asks for DP-SGD, else ``None``."""
        if str(hparams.get(HParam.DP, DPMode.NONE)) != DPMode.SAMPLE:
            return None
        try:
            settings = cls(
                noise_multiplier=float(hparams[HParam.DP_NOISE_MULTIPLIER]),
                max_grad_norm=float(hparams[HParam.DP_MAX_GRAD_NORM]),
                delta=float(hparams[HParam.DP_DELTA]),
                accountant=str(hparams[HParam.DP_ACCOUNTANT]),
                target_epsilon=float(hparams.get(HParam.DP_TARGET_EPSILON, 0.0)),
                rounds=int(hparams.get(HParam.DP_ROUNDS, 0)),
            )
        except KeyError as exc:
            raise HParamError(f"DP-SGD hyperparameter {exc.args[0]!r} is missing") from None
        except (TypeError, ValueError) as exc:
            raise HParamError(f"DP-SGD hyperparameter has the wrong type: {exc}") from None
        if not settings.noise_multiplier > 0 or not settings.max_grad_norm > 0:
            raise HParamError("DP-SGD needs a positive noise multiplier and max_grad_norm")
        if not 0.0 < settings.delta < 1.0:
            raise HParamError(f"dp_delta must be in (0, 1), got {settings.delta}")
        if settings.accountant not in ACCOUNTANTS:
            raise HParamError(f"dp_accountant must be one of {list(ACCOUNTANTS)}")
        if settings.target_epsilon > 0 and settings.rounds < 1:
            raise HParamError("dp_target_epsilon needs dp_rounds, the rounds the run plans")
        return settings

    def noise_for(self, *, num_examples: int, training: LocalTraining) -> float:
        """The noise multiplier this site trains with."""
        if self.target_epsilon <= 0:
            return self.noise_multiplier
        return noise_for_epsilon(
            target_epsilon=self.target_epsilon,
            delta=self.delta,
            sample_rate=sample_rate(num_examples=num_examples, batch_size=training.batch_size),
            steps=self.rounds * steps_per_round(num_examples=num_examples, training=training),
            accountant=self.accountant,
        )


class _Session:
    """One round of DP-SGD: Opacus's wrapped module, optimiser and Poisson sampler."""

    def __init__(
        self,
        *,
        owner: DPSGD,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        num_examples: int,
        training: LocalTraining,
        generator: torch.Generator,
    ) -> None:
        from opacus import GradSampleModule
        from opacus.accountants import PRVAccountant, RDPAccountant
        from opacus.optimizers import DPOptimizer
        from opacus.utils.uniform_sampler import UniformWithReplacementSampler

        check_dp_model(model)
        self._owner = owner
        q = sample_rate(num_examples=num_examples, batch_size=training.batch_size)
        noise = owner.settings.noise_for(num_examples=num_examples, training=training)
        # Opacus's hooks return views that an in-place activation may not overwrite; the
        # same activation out of place gives the same numbers.
        self._inplace = [m for m in model.modules() if getattr(m, "inplace", False) is True]
        for m in self._inplace:
            m.inplace = False  # type: ignore[assignment]
        self._grad_sample = GradSampleModule(model, batch_first=True, loss_reduction="mean")
        source = owner.noise
        noise_generator = source.torch_generator(
            device=next(model.parameters()).device, training=generator
        )
        self._optimizer = DPOptimizer(
            optimizer,
            noise_multiplier=noise,
            max_grad_norm=owner.settings.max_grad_norm,
            expected_batch_size=max(1, int(num_examples * q)),
            loss_reduction="mean",
            generator=noise_generator,
            secure_mode=source.is_secure,
        )
        accountant: Any = RDPAccountant() if owner.settings.accountant == "rdp" else PRVAccountant()
        accountant.history = [(z, r, n) for z, r, n in owner.ledger.history]
        account = accountant.get_optimizer_hook_fn(sample_rate=q)

        def after_noise(optimizer: DPOptimizer) -> None:
            account(optimizer)
            source.refresh(noise_generator)  # the next step's noise: fresh OS randomness

        self._optimizer.attach_step_hook(after_noise)
        self._accountant = accountant
        self._sampler = UniformWithReplacementSampler(
            num_samples=num_examples,
            sample_rate=q,
            generator=generator,
            steps=steps_per_round(num_examples=num_examples, training=training),
        )

    @property
    def module(self) -> torch.nn.Module:
        """Opacus's per-example-gradient wrapper around the model."""
        module: torch.nn.Module = self._grad_sample
        return module

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """Opacus's DP optimiser around the round's optimiser."""
        return self._optimizer  # type: ignore[no-any-return]

    def batches(self) -> Iterator[torch.Tensor]:
        """Poisson-sampled index batches, one per step."""
        for indices in self._sampler:
            yield torch.as_tensor(indices, dtype=torch.long)

    def close(self) -> None:
        """Remove Opacus's hooks and per-example gradients; keep the accountant's history."""
        ledger = Ledger()
        for z, q, n in self._accountant.history:
            ledger = ledger.add(noise_multiplier=z, sample_rate=q, steps=n)
        self._owner.ledger = ledger
        self._owner.last_noise_multiplier = float(self._optimizer.noise_multiplier)
        self._owner.last_sample_rate = float(self._sampler.sample_rate)
        self._grad_sample._close()
        for m in self._inplace:
            m.inplace = True  # type: ignore[assignment]


class DPSGD:
    """A site's DP-SGD: its settings, and its accountant's history across rounds.

    Parameters
    ----------
    settings
        From the instruction.
    ledger
        The site's history so far (from its site state).
    noise
        Where the gradient noise comes from (``None``: OS randomness, see
        :mod:`flmi.privacy.noise_source`).
    """

    def __init__(
        self, *, settings: SampleDPSettings, ledger: Ledger, noise: NoiseSource | None = None
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.noise = noise if noise is not None else NoiseSource()
        self.last_noise_multiplier = float("nan")
        self.last_sample_rate = float("nan")

    def start(
        self,
        *,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        num_examples: int,
        training: LocalTraining,
        generator: torch.Generator,
    ) -> PrivateSession:
        """Wrap the model and optimiser with Opacus for one round."""
        return _Session(
            owner=self,
            model=model,
            optimizer=optimizer,
            num_examples=num_examples,
            training=training,
            generator=generator,
        )

    def report(self, *, steps_this_round: int) -> dict[str, float]:
        """What the site tells the server about its spending (aggregate numbers only)."""
        return {
            PrivacyKey.EPSILON: self.ledger.epsilon(
                delta=self.settings.delta, accountant=self.settings.accountant
            ),
            PrivacyKey.NOISE_MULTIPLIER: self.last_noise_multiplier,
            PrivacyKey.SAMPLE_RATE: self.last_sample_rate,
            PrivacyKey.STEPS: float(steps_this_round),
        }
