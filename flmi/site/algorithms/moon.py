"""MOON's client side: a model-contrastive loss on the network's representation.

Li, He and Song, "Model-Contrastive Federated Learning", CVPR 2021. With ``z``
the representation of a batch under the model being trained, ``z_glob`` under
the received global model and ``z_prev`` under the site's own model of its
last round (the global model on its first round), each batch's loss gains

    mu * mean_x -log( exp(sim(z, z_glob) / tau)
                      / (exp(sim(z, z_glob) / tau) + exp(sim(z, z_prev) / tau)) )

with ``sim`` the cosine similarity. The representation is the input of the
network's last :class:`torch.nn.Linear` layer (the penultimate features, read
through a forward hook, so any network ending in a linear layer works). The
previous local model stays in the site's state (``moon.previous/<name>``).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F

from flmi.core.keys import ClientAlgorithm, Extra, HParam, SemiSupervised
from flmi.core.params import Params
from flmi.site.algorithms.base import ClientStep, LocalSite, LocalUpdate, PassStep, RoundContext
from flmi.tasks.base import FitHooks, FitResult, HParamError
from flmi.tasks.torch_params import load_params, params_copy

DEFAULT_MU = 1.0
DEFAULT_TEMPERATURE = 0.5


def moon_loss(
    z: torch.Tensor, z_global: torch.Tensor, z_previous: torch.Tensor, *, temperature: float
) -> torch.Tensor:
    """MOON's model-contrastive loss, averaged over the batch (rows are examples).

    The global model's representation is the positive pair, the previous
    local model's the negative one.
    """
    positive = F.cosine_similarity(z, z_global, dim=1) / temperature
    negative = F.cosine_similarity(z, z_previous, dim=1) / temperature
    logits = torch.stack([positive, negative], dim=1)
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)


def final_linear(model: torch.nn.Module) -> torch.nn.Linear:
    """The network's last :class:`torch.nn.Linear` layer, whose input is the representation."""
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if not layers:
        raise HParamError(
            "MOON needs a network that ends in a linear layer (its input is the "
            "representation); this task's network has none"
        )
    return layers[-1]


class RepresentationTap:
    """The input batch and the representation of a model's last forward pass.

    Parameters
    ----------
    model
        The network; a forward pre-hook on it keeps the batch, one on its last
        linear layer keeps that layer's input, flattened per example.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.inputs: torch.Tensor | None = None
        self.features: torch.Tensor | None = None
        self._handles = [
            model.register_forward_pre_hook(self._keep_inputs),
            final_linear(model).register_forward_pre_hook(self._keep_features),
        ]

    def _keep_inputs(self, _module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        self.inputs = args[0]

    def _keep_features(self, _module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        self.features = args[0].flatten(1)

    def close(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles = []


class _Frozen:
    """A frozen copy of a network that answers with its representation of a batch."""

    def __init__(self, model: torch.nn.Module) -> None:
        self._model = model.eval().requires_grad_(False)
        self._tap = RepresentationTap(self._model)

    def representation(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self._model(x)
        if self._tap.features is None:
            raise RuntimeError("the network's last linear layer did not run")
        return self._tap.features


class _ContrastiveStep(PassStep):
    def __init__(self, *, mu: float, temperature: float, previous: Params) -> None:
        self._mu = mu
        self._temperature = temperature
        self._previous = previous
        self._tap: RepresentationTap | None = None

    def before_fit(self, site: LocalSite) -> FitHooks | None:
        """Freeze copies of the global and previous models; add the contrastive term."""
        model = site.model
        final_linear(model)  # refuse a network without a representation before copying it
        global_model = _Frozen(copy.deepcopy(model))
        previous_model = global_model
        if self._previous:
            previous_copy = copy.deepcopy(model)
            load_params(previous_copy, self._previous, where="MOON's previous local model")
            previous_model = _Frozen(previous_copy)
        tap = self._tap = RepresentationTap(model)
        mu, temperature = self._mu, self._temperature

        def penalty(_model: torch.nn.Module) -> torch.Tensor:
            if tap.inputs is None or tap.features is None:
                raise RuntimeError("MOON's penalty ran before the network did")
            z_global = global_model.representation(tap.inputs)
            z_previous = previous_model.representation(tap.inputs)
            loss = moon_loss(tap.features, z_global, z_previous, temperature=temperature)
            return mu * loss

        return FitHooks(penalty=penalty)

    def after_fit(self, site: LocalSite, update: LocalUpdate, result: FitResult) -> LocalUpdate:
        """Keep the trained local model as next round's previous model."""
        trained = params_copy(site.model)
        return update.with_tensors({Extra.MOON_PREVIOUS + k: v for k, v in trained.items()})

    def close(self) -> None:
        """Take the hooks off the working model."""
        if self._tap is not None:
            self._tap.close()
            self._tap = None


def _number(context: RoundContext, key: HParam, default: float) -> float:
    value = context.instruction.hparams.get(key, default)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise HParamError(f"{key.value} must be a number, got {value!r}") from None


class Moon:
    """Runs when ``client_algorithm = "moon"``."""

    name = ClientAlgorithm.MOON.value

    def start(self, context: RoundContext) -> ClientStep | None:
        """A step with ``moon_mu``, ``moon_temperature`` and the previous local model."""
        if context.training.client_algorithm != self.name:
            return None
        if context.training.semi_supervised != SemiSupervised.NONE:
            raise HParamError(
                "MOON reads one representation per batch; set semi_supervised = 'none'"
            )
        mu = _number(context, HParam.MOON_MU, DEFAULT_MU)
        temperature = _number(context, HParam.MOON_TEMPERATURE, DEFAULT_TEMPERATURE)
        if not (math.isfinite(mu) and mu >= 0):
            raise HParamError(f"moon_mu must not be negative, got {mu}")
        if not (math.isfinite(temperature) and temperature > 0):
            raise HParamError(f"moon_temperature must be positive, got {temperature}")
        return _ContrastiveStep(
            mu=mu, temperature=temperature, previous=context.kept(Extra.MOON_PREVIOUS)
        )
