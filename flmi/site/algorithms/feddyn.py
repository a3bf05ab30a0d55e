"""FedDyn's client side: a linear and a quadratic term make the local optimum the global one.

Acar et al., "Federated Learning Based on Dynamic Regularization", ICLR 2021.
Site ``i`` in round ``t`` minimises

    L_i(w) - <g_i, w> + alpha / 2 * ||w - w_global||^2

where ``g_i`` is its kept gradient term (``grad L_i`` at its previous local
optimum, 0 on its first round), and afterwards keeps
``g_i <- g_i - alpha * (w_i - w_global)``, the first-order condition of that
minimum. ``g_i`` stays in the site's state (``feddyn.grad/<name>``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from flmi.core.keys import ClientAlgorithm, Extra, HParam
from flmi.core.params import Params, check_same_schema
from flmi.site.algorithms.base import ClientStep, LocalSite, LocalUpdate, PassStep, RoundContext
from flmi.site.hooks import params_view_trainable
from flmi.tasks.base import FitHooks, FitResult, HParamError

DEFAULT_ALPHA = 0.01


def _trainable(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


class _DynamicStep(PassStep):
    def __init__(self, *, alpha: float, grad: Params) -> None:
        self._alpha = alpha
        self._kept = grad
        self._anchor: dict[str, torch.Tensor] = {}
        self._grad: dict[str, torch.Tensor] = {}

    def before_fit(self, site: LocalSite) -> FitHooks | None:
        """Anchor at the received weights; add ``-<g_i, w> + alpha/2 ||w - w_global||^2``."""
        trainable = _trainable(site.model)
        if self._kept:
            check_same_schema(
                expected=params_view_trainable(site.model),
                actual=self._kept,
                where="FedDyn's kept gradient term",
            )
        self._anchor = {n: p.detach().clone() for n, p in trainable.items()}
        self._grad = {
            n: torch.from_numpy(
                np.array(self._kept[n], copy=True) if n in self._kept else np.zeros(p.shape)
            ).to(p.device, p.dtype)
            for n, p in trainable.items()
        }
        alpha, anchor, grad = self._alpha, self._anchor, self._grad

        def penalty(model: torch.nn.Module) -> torch.Tensor:
            terms = [
                -(grad[n] * p).sum() + 0.5 * alpha * ((p - anchor[n]) ** 2).sum()
                for n, p in _trainable(model).items()
            ]
            return torch.stack(terms).sum()

        return FitHooks(penalty=penalty)

    def after_fit(self, site: LocalSite, update: LocalUpdate, result: FitResult) -> LocalUpdate:
        """Keep ``g_i - alpha * (w_i - w_global)`` as the new gradient term."""
        kept: Params = {}
        with torch.no_grad():
            for name, param in _trainable(site.model).items():
                new = self._grad[name] - self._alpha * (param.detach() - self._anchor[name])
                kept[Extra.FEDDYN_GRAD + name] = new.cpu().numpy()
        return update.with_tensors(kept)


def feddyn_alpha(context: RoundContext) -> float:
    """The instruction's ``feddyn_alpha`` (default 0.01), checked positive and finite."""
    value = context.instruction.hparams.get(HParam.FEDDYN_ALPHA, DEFAULT_ALPHA)
    try:
        alpha = float(value)
    except (TypeError, ValueError):
        raise HParamError(f"feddyn_alpha must be a number, got {value!r}") from None
    if not (math.isfinite(alpha) and alpha > 0):
        raise HParamError(f"feddyn_alpha must be positive, got {alpha}")
    return alpha


class FedDyn:
    """Runs when ``client_algorithm = "feddyn"``."""

    name = ClientAlgorithm.FEDDYN.value

    def start(self, context: RoundContext) -> ClientStep | None:
        """A step with this site's kept gradient term (zeros on its first round)."""
        if context.training.client_algorithm != self.name:
            return None
        return _DynamicStep(alpha=feddyn_alpha(context), grad=context.kept(Extra.FEDDYN_GRAD))
