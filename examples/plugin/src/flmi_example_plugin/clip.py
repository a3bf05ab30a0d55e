"""``clip_grad``: a client algorithm that clips each local step's gradient norm.

It runs at the hospitals, so they install this package too. The strategy asks
for it by sending ``client_algorithm = "clip_grad"`` and its one setting as
``"clip_grad.max_norm"``; the site reports the share of steps it clipped.
"""

from __future__ import annotations

import math

import torch

from flmi.site.algorithms import ClientStep, LocalSite, LocalUpdate, PassStep, RoundContext
from flmi.tasks.base import FitHooks, FitResult, HParamError

NAME = "clip_grad"
MAX_NORM = f"{NAME}.max_norm"
CLIPPED = f"{NAME}.clipped_fraction"


class _ClipStep(PassStep):
    def __init__(self, *, max_norm: float) -> None:
        self._max_norm = max_norm
        self._steps = 0
        self._clipped = 0

    def before_fit(self, site: LocalSite) -> FitHooks | None:
        """Clip the gradient to ``max_norm`` after each backward pass."""

        def clip(model: torch.nn.Module) -> None:
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), self._max_norm)
            self._steps += 1
            self._clipped += int(float(norm) > self._max_norm)

        return FitHooks(before_step=clip)

    def after_fit(self, site: LocalSite, update: LocalUpdate, result: FitResult) -> LocalUpdate:
        """Report the share of local steps whose gradient was clipped."""
        return update.with_metrics({CLIPPED: self._clipped / max(self._steps, 1)})


class ClipGrad:
    """Runs when the instruction's ``client_algorithm`` is ``clip_grad``."""

    name = NAME

    def start(self, context: RoundContext) -> ClientStep | None:
        """A clipping step, or ``None`` when another algorithm is named."""
        if context.training.client_algorithm != NAME:
            return None
        value = context.instruction.hparams.get(MAX_NORM)
        if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            raise HParamError(f"{MAX_NORM} must be a positive number, got {value!r}")
        return _ClipStep(max_norm=float(value))


CLIP_GRAD = ClipGrad()
