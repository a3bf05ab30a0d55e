"""The one small interface every client-side algorithm implements.

A client algorithm changes a site's local training without the site code
path knowing it: FedProx's proximal term, SCAFFOLD's gradient correction,
FedDyn's linear and quadratic terms, MOON's contrastive loss, Ditto's personal
model, IFCA's choice of cluster model, FedBN's and FedNorm's local layers,
DP-SGD. Each round :class:`flmi.site.site.Site` runs the same steps:

1. parse the instruction; every registered algorithm is asked, through
   :meth:`ClientAlgorithm.start`, whether this round needs it (``None``: no)
   and returns a :class:`ClientStep` for the round if so;
2. load the received weights; each step's :meth:`ClientStep.before_fit` may
   load other weights (IFCA) and returns :class:`FitHooks` for the local step;
3. train once with the merged hooks;
4. each step's :meth:`ClientStep.after_fit` post-processes the
   :class:`LocalUpdate`: what is sent (weights, extras, metrics) and what the
   site keeps (its :class:`flmi.site.state.SiteState` tensors and meta);
5. validate and send the update, save the state;
6. :meth:`ClientStep.close` in every case.

A step reads the round's instruction and the site's state from the
:class:`RoundContext`, and uses the site only through :class:`LocalSite`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import torch

from flmi.core.messages import TrainInstruction
from flmi.core.params import Params
from flmi.privacy.noise_source import NoiseSource
from flmi.site.state import SiteState
from flmi.tasks.base import FitHooks, FitResult, LocalTraining


@dataclass(frozen=True)
class RoundContext:
    """What a client algorithm reads when a round starts.

    Parameters
    ----------
    instruction
        The server's instruction (weights, hyperparameters, extra tensors).
    training
        The local-training settings parsed from it.
    state
        The site's own state as of its last round.
    noise
        Where the site's privacy noise comes from (OS randomness unless the run
        explicitly asked for seeded, insecure noise).
    """

    instruction: TrainInstruction
    training: LocalTraining
    state: SiteState
    noise: NoiseSource = field(default_factory=NoiseSource)

    def kept(self, prefix: str) -> Params:
        """The site's state tensors under ``prefix``, with the prefix removed."""
        return {k[len(prefix) :]: v for k, v in self.state.tensors.items() if k.startswith(prefix)}


@dataclass(frozen=True)
class LocalUpdate:
    """A round's result while the client algorithms post-process it.

    Parameters
    ----------
    params
        The weights the site will send.
    extras
        Extra named tensors the site will send (SCAFFOLD's ``delta c``).
    tensors
        The tensors of the site's next state (never sent).
    meta
        The JSON-ready values of the site's next state (never sent).
    metrics
        Training metrics the site will send.
    """

    params: Params
    extras: Params
    tensors: Params
    meta: Mapping[str, Any]
    metrics: Mapping[str, float]

    def with_extras(self, extras: Params) -> LocalUpdate:
        """A copy with ``extras`` added to what is sent."""
        return replace(self, extras={**self.extras, **extras})

    def with_tensors(self, tensors: Params) -> LocalUpdate:
        """A copy with ``tensors`` added to (or replaced in) the site's next state."""
        return replace(self, tensors={**self.tensors, **tensors})

    def with_metrics(self, metrics: Mapping[str, float]) -> LocalUpdate:
        """A copy with ``metrics`` added to what is sent."""
        return replace(self, metrics={**self.metrics, **metrics})


class LocalSite(Protocol):
    """What a client algorithm may use of the site it runs in, during one round."""

    @property
    def model(self) -> torch.nn.Module:
        """The working model (the received weights before training, the trained ones after)."""
        ...

    def load(self, params: Params, *, where: str) -> None:
        """Put ``params`` (every float tensor) into the working model; ``where`` names them."""
        ...

    def fit(self, *, purpose: str, hooks: FitHooks | None) -> FitResult:
        """Train the working model once more on the site's training split.

        ``purpose`` seeds the batch order (``derive_seed(..., purpose=...)``),
        so a second training of a round (Ditto's personal model) draws its own.
        """
        ...

    def train_loss(self) -> float:
        """The working model's mean loss on the site's training split (IFCA's choice)."""
        ...


class ClientStep(Protocol):
    """One client algorithm's part of one round at one site."""

    def before_fit(self, site: LocalSite) -> FitHooks | None:
        """Prepare the working model and return hooks for the local step (``None``: none).

        Raises
        ------
        flmi.core.errors.SchemaError
            Received or kept tensors that do not fit the model (reported as a
            schema mismatch).
        flmi.tasks.base.HParamError
            The model cannot run this algorithm (reported as a refusal).
        """
        ...

    def after_fit(self, site: LocalSite, update: LocalUpdate, result: FitResult) -> LocalUpdate:
        """Post-process the update after local training: what is sent, what is kept."""
        ...

    def close(self) -> None:
        """Release what :meth:`before_fit` attached to the model; called in every case."""
        ...


class ClientAlgorithm(Protocol):
    """A client-side algorithm, registered by name (see :mod:`flmi.site.algorithms.registry`)."""

    @property
    def name(self) -> str:
        """The registered name (for the algorithms ``client_algorithm`` selects, that value)."""
        ...

    def start(self, context: RoundContext) -> ClientStep | None:
        """This round's step, or ``None`` when the instruction does not ask for this algorithm.

        Raises
        ------
        flmi.tasks.base.HParamError
            A hyperparameter of this algorithm the site will not run with.
        """
        ...


class PassStep:
    """A :class:`ClientStep` that changes nothing: a base for steps that need only some parts."""

    def before_fit(self, site: LocalSite) -> FitHooks | None:
        """No hooks."""
        return None

    def after_fit(self, site: LocalSite, update: LocalUpdate, result: FitResult) -> LocalUpdate:
        """The update unchanged."""
        return update

    def close(self) -> None:
        """Nothing to release."""
