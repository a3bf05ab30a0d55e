"""SCAFFOLD's client side: correct every gradient by ``c - c_i``; keep and send ``c_i``."""

from __future__ import annotations

from flmi.core.keys import ClientAlgorithm, Extra
from flmi.core.params import Params, check_same_schema
from flmi.site.algorithms.base import ClientStep, LocalSite, LocalUpdate, PassStep, RoundContext
from flmi.site.hooks import ScaffoldCorrection, params_view_trainable, server_variate
from flmi.tasks.base import FitHooks, FitResult, HParamError


class _ScaffoldStep(PassStep):
    def __init__(self, *, server_c: Params, site_c: Params, lr: float) -> None:
        self._server_c = server_c
        self._site_c = site_c
        self._lr = lr
        self._correction: ScaffoldCorrection | None = None

    def before_fit(self, site: LocalSite) -> FitHooks | None:
        """Check the server variate against the model and add the gradient correction."""
        trainable = params_view_trainable(site.model)
        check_same_schema(
            expected=trainable,
            actual={k: v for k, v in self._server_c.items() if k in trainable},
            where="SCAFFOLD server control variate",
        )
        self._correction = ScaffoldCorrection(
            model=site.model, server_c=self._server_c, site_c=self._site_c
        )
        return self._correction.hooks()

    def after_fit(self, site: LocalSite, update: LocalUpdate, result: FitResult) -> LocalUpdate:
        """Send ``delta c_i`` and keep the new ``c_i`` (option II)."""
        if self._correction is None:
            raise RuntimeError("SCAFFOLD's step finished before it started")
        variates = self._correction.finish(
            model=site.model, num_steps=result.num_steps, lr=self._lr
        )
        return update.with_extras(
            {Extra.SCAFFOLD_DELTA_C + k: v for k, v in variates.delta_c.items()}
        ).with_tensors({Extra.SCAFFOLD_C + k: v for k, v in variates.site_c.items()})


class Scaffold:
    """Runs when ``client_algorithm = "scaffold"``; needs plain local SGD."""

    name = ClientAlgorithm.SCAFFOLD.value

    def start(self, context: RoundContext) -> ClientStep | None:
        """A step with the server's ``c`` and this site's ``c_i`` (zeros on its first round)."""
        training = context.training
        if training.client_algorithm != self.name:
            return None
        if training.optimizer != "sgd" or training.momentum != 0.0:
            raise HParamError(
                "client_algorithm 'scaffold' needs plain SGD: optimizer = 'sgd', momentum = 0"
            )
        return _ScaffoldStep(
            server_c=server_variate(context.instruction.extras),
            site_c=context.kept(Extra.SCAFFOLD_C),
            lr=training.lr,
        )
