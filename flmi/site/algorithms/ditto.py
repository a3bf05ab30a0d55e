"""Ditto's client side: a personal model, pulled toward the global one, never sent."""

from __future__ import annotations

from flmi.core.keys import Extra, Personal
from flmi.core.params import Params
from flmi.site.algorithms.base import ClientStep, LocalSite, LocalUpdate, PassStep, RoundContext
from flmi.site.hooks import proximal_penalty
from flmi.tasks.base import FitResult
from flmi.tasks.torch_params import params_copy


class _PersonalStep(PassStep):
    def __init__(self, *, start: Params, anchor: Params, ditto_lambda: float) -> None:
        self._start = start
        self._anchor = anchor
        self._lambda = ditto_lambda

    def after_fit(self, site: LocalSite, update: LocalUpdate, result: FitResult) -> LocalUpdate:
        """Train the personal model (after the global one was copied) and keep it."""
        site.load(self._start, where="personal model")
        hooks = proximal_penalty(model=site.model, mu=self._lambda, anchor_params=self._anchor)
        site.fit(purpose="personal", hooks=hooks)
        personal = params_copy(site.model)
        return update.with_tensors({Extra.PERSONAL + k: v for k, v in personal.items()})


class Ditto:
    """Runs when the instruction's ``personal`` is ``"ditto"``.

    Li et al., "Ditto: Fair and Robust Federated Learning Through
    Personalization", ICML 2021. After the global model's local training the
    site trains its own model ``v`` from where it left it (the received global
    weights on its first round) with ``ditto_lambda / 2 * ||v - w_global||^2``.
    """

    name = Personal.DITTO.value

    def start(self, context: RoundContext) -> ClientStep | None:
        """A step that trains the personal model, or ``None``."""
        if context.training.personal != Personal.DITTO:
            return None
        params = context.instruction.params
        return _PersonalStep(
            start=context.kept(Extra.PERSONAL) or params,
            anchor=params,
            ditto_lambda=context.training.ditto_lambda,
        )
