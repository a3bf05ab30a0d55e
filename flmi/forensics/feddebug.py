"""Faulty-site localisation with no data: FedDebug's differential testing of neuron activations.

Gill et al., "FedDebug: Systematic Debugging for Federated Learning
Applications", ICSE 2023. Each site's model of a round (its full weights, or
the global model plus its delta) is run on the same random inputs (uniform
noise in the images' range: no patient data is needed or touched). For each
input every model's neurons are recorded (the outputs of every activation
and linear layer; a feature map counts one neuron per channel, its spatial
mean), normalised by their layer's largest value, and a neuron counts as
active above ``threshold``. The sites whose activation sets agree most are
found by leaving each site out in turn: the site whose removal leaves the
others agreeing most (the largest Jaccard overlap of their active sets) is
that input's suspect; the overlap is averaged over layers, so the few output
neurons weigh as much as a wide hidden layer (a tie splits the input's vote). A site's score is the
share of inputs on which it is the suspect, so the scores add up to 1; most
suspect first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from flmi.core.keys import Manifest
from flmi.core.messages import ClientUpdate, UpdateKind
from flmi.core.params import Params
from flmi.tasks.torch_params import load_params

#: Layers whose outputs are the neurons compared.
NEURON_LAYERS = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Linear)


@dataclass(frozen=True)
class DebugSettings:
    """FedDebug's inputs and activation threshold.

    Parameters
    ----------
    inputs
        How many random inputs to test.
    threshold
        A neuron is active above this share of its layer's largest value.
    seed
        Seeds the random inputs.
    """

    inputs: int = 100
    threshold: float = 0.5
    seed: int = 0


def site_model(update: ClientUpdate, before: Params) -> Params:
    """The model ``update`` stands for: its weights, or ``before`` plus its delta."""
    if update.kind is UpdateKind.FULL:
        return {**before, **update.params}
    return {
        k: (v.astype(np.float64) + update.params[k].astype(np.float64)).astype(v.dtype)
        if k in update.params
        else v
        for k, v in before.items()
    }


def _neurons(model: nn.Module, x: torch.Tensor) -> list[np.ndarray]:
    """Each neuron layer's outputs on ``x``: ``(inputs, neurons)`` per layer."""
    found: list[np.ndarray] = []

    def keep(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        out = output.detach().to(torch.float64)
        if out.ndim > 2:
            out = out.flatten(start_dim=2).mean(dim=2)
        found.append(out.cpu().numpy())

    hooks = [m.register_forward_hook(keep) for m in model.modules() if isinstance(m, NEURON_LAYERS)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return found


def active_sets(model: nn.Module, x: torch.Tensor, *, threshold: float) -> list[np.ndarray]:
    """Per neuron layer, ``(inputs, neurons)`` booleans: which neurons each input activates."""
    layers = []
    for values in _neurons(model, x):
        top = np.max(np.abs(values), axis=1, keepdims=True)
        scaled = np.divide(values, top, out=np.zeros_like(values), where=top > 0)
        layers.append(scaled > threshold)
    return layers


def _agreement(sets: np.ndarray) -> float:
    """Jaccard overlap of several active sets: ``|intersection| / |union|`` (1 when both empty)."""
    union = np.logical_or.reduce(sets).sum()
    return 1.0 if union == 0 else float(np.logical_and.reduce(sets).sum() / union)


def suspects(active: Sequence[np.ndarray]) -> np.ndarray:
    """Per input, a vote for the site whose removal leaves the others agreeing most.

    Parameters
    ----------
    active
        Per neuron layer, ``(sites, inputs, neurons)`` booleans; the others'
        agreement is the mean of their Jaccard overlap over layers, so a
        small layer (the output layer) weighs as much as a wide one.

    Returns
    -------
    numpy.ndarray
        ``(inputs, sites)`` votes; each input's add up to 1 (split among tied sites).
    """
    n, inputs = active[0].shape[0], active[0].shape[1]
    keep = [np.array([j for j in range(n) if j != i]) for i in range(n)]
    votes = np.zeros((inputs, n))
    for k in range(inputs):
        agreement = np.array(
            [np.mean([_agreement(layer[rest, k]) for layer in active]) for rest in keep]
        )
        tied = agreement == agreement.max()
        votes[k, tied] = 1.0 / tied.sum()  # a tie splits the input's vote
    return votes


def localise(
    *,
    sites: Sequence[str],
    models: Sequence[Params],
    network: nn.Module,
    input_shape: Sequence[int],
    settings: DebugSettings,
) -> list[tuple[str, float]]:
    """Rank ``sites`` by how often their model's neurons disagree with the others'.

    Returns
    -------
    list of (site, score)
        Most suspect first; a score is the share of random inputs on which
        the site was the suspect.
    """
    if len(sites) < 3:
        raise ValueError(f"localisation needs at least 3 sites to outvote one, got {len(sites)}")
    rng = np.random.default_rng(settings.seed)
    dtype = next(iter(network.parameters())).dtype
    x = torch.from_numpy(rng.random((settings.inputs, *input_shape))).to(dtype)
    network.eval()
    per_site = []
    for params in models:
        load_params(network, params, where="localisation")
        per_site.append(active_sets(network, x, threshold=settings.threshold))
    layers = [np.stack([site[i] for site in per_site]) for i in range(len(per_site[0]))]
    votes = suspects(layers).mean(axis=0)
    ranked = sorted(range(len(sites)), key=lambda i: (-votes[i], sites[i]))
    return [(sites[i], float(votes[i])) for i in ranked]


def ranking_json(rnd: int, ranking: Sequence[tuple[str, float]]) -> dict[str, object]:
    """The machine-readable form of :func:`localise`'s ranking."""
    return {
        Manifest.ROUND: rnd,
        Manifest.RANKING: [{Manifest.SITE: s, Manifest.SCORE: v} for s, v in ranking],
    }
