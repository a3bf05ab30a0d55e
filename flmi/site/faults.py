"""Simulated faulty sites: what robust aggregation and update checks are for.

Simulation only. A faulty site trains like any other and then corrupts what it
sends, *after* its own update check, the way a compromised or broken site
would: the server's own validation and the aggregator must cope.
Label flipping is the exception: it corrupts the site's training labels, so
it is applied to the data before the site is built (see
:func:`flip_labels`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

import numpy as np

from flmi.core.messages import (
    ClientUpdate,
    EvaluateInstruction,
    EvaluateReply,
    TrainInstruction,
    TrainReply,
    UpdateKind,
)
from flmi.core.params import Params
from flmi.core.rng import generator
from flmi.data.arrays import ArraySplit, SiteSplits
from flmi.site.site import Site


class Fault(StrEnum):
    """Ways a simulated site misbehaves."""

    NONE = "none"
    LABEL_FLIP = "label_flip"
    NOISE = "noise"
    SCALE = "scale"
    NAN = "nan"
    INF = "inf"


@dataclass(frozen=True)
class FaultSpec:
    """One site's fault and its strength.

    Parameters
    ----------
    kind
        The fault.
    scale
        For ``scale``: the update ``y - x`` is multiplied by this factor.
    noise_std
        For ``noise``: the site sends ``x + N(0, noise_std^2)`` instead of its weights.
    """

    kind: Fault = Fault.NONE
    scale: float = 10.0
    noise_std: float = 1.0


def flip_labels(splits: SiteSplits, *, num_classes: int) -> SiteSplits:
    """Train on ``num_classes - 1 - y``; validation and test labels stay true.

    Multi-label indicators ``(N, L)`` are flipped label by label (``1 - y``).
    """
    top = 1 if splits.train.y.ndim == 2 else num_classes - 1
    train = ArraySplit(x=splits.train.x, y=(top - splits.train.y).astype(np.int64))
    return replace(splits, train=train)


class FaultySite:
    """A site whose outgoing updates are corrupted after its own checks.

    Parameters
    ----------
    site
        The honest site underneath.
    fault
        What to do to its updates.
    seed
        Seed of the noise, drawn per (seed, site, round).
    """

    def __init__(self, *, site: Site, fault: FaultSpec, seed: int) -> None:
        self.name = site.name
        self._site, self._fault, self._seed = site, fault, seed

    def train(self, instruction: TrainInstruction) -> TrainReply:
        """Train honestly, then corrupt the update."""
        reply = self._site.train(instruction)
        if not isinstance(reply, ClientUpdate) or reply.kind != UpdateKind.FULL:
            return reply
        return replace(reply, params=self._corrupt(instruction, reply.params))

    def evaluate(self, instruction: EvaluateInstruction) -> EvaluateReply:
        """Evaluation stays honest: the site's own numbers are not what is under attack."""
        return self._site.evaluate(instruction)

    def _corrupt(self, instruction: TrainInstruction, params: Params) -> Params:
        x, kind = instruction.params, self._fault.kind
        if kind == Fault.SCALE:
            return {
                k: (x[k] + self._fault.scale * (v - x[k])).astype(v.dtype)
                for k, v in params.items()
            }
        if kind == Fault.NOISE:
            rng = generator(seed=self._seed, party=self.name, rnd=instruction.rnd, purpose="fault")
            return {
                k: (x[k] + rng.normal(0.0, self._fault.noise_std, size=v.shape)).astype(v.dtype)
                for k, v in sorted(params.items())
            }
        if kind in (Fault.NAN, Fault.INF):
            bad = np.nan if kind == Fault.NAN else np.inf
            out = {k: v.copy() for k, v in params.items()}
            first = sorted(out)[0]
            out[first].flat[0] = bad
            return out
        return params
