"""Server optimisers: FedAvgM (momentum) and the FedOpt family (FedAdam, FedYogi, FedAdagrad).

Each is the example-weighted mean of the updates (FedAvg's aggregate ``y``)
followed by an optimiser step on the server. The pseudo-gradient is
``g = x - y`` for the global weights ``x``; Reddi et al. write its negative,
``Delta = y - x``. Optimiser states are kept in float64 and the new global
weights are returned in each tensor's own dtype. All four are linear in the
updates (the aggregate is a weighted sum), so they suit secure aggregation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from flmi.core.messages import HParamValue
from flmi.core.params import Params, check_same_schema
from flmi.strategies.base import ComposedStrategy, WeightedMean, as_float64, cast_like
from flmi.strategies.options import help_field, positive, require


def _zeros64(params: Params) -> Params:
    return {k: np.zeros(params[k].shape, dtype=np.float64) for k in sorted(params)}


def _slot(slots: Mapping[str, Params], name: str, params: Params) -> Params:
    """A float64 slot of the record, checked against the global weights' names and shapes."""
    if name not in slots:
        raise ValueError(f"the state record has no '{name}/...' tensors")
    values = slots[name]
    check_same_schema(expected=_zeros64(params), actual=values, where=f"state slot '{name}'")
    return {k: np.array(values[k], copy=True) for k in sorted(values)}


@dataclass(frozen=True)
class MomentumOptions:
    """``[strategy]`` options of ``fedavgm``."""

    server_lr: float = help_field(
        1.0, "server learning rate eta (> 0); 1 with momentum 0 is FedAvg"
    )
    server_momentum: float = help_field(0.9, "server momentum beta, in [0, 1)")

    def __post_init__(self) -> None:
        require(
            positive(self.server_lr), key="server_lr", value=self.server_lr, expected="positive"
        )
        require(
            0.0 <= self.server_momentum < 1.0,
            key="server_momentum",
            value=self.server_momentum,
            expected="in [0, 1)",
        )


@dataclass(frozen=True)
class MomentumState:
    """FedAvgM's rule state: the velocity, float64, one tensor per model tensor."""

    velocity: Params


class ServerMomentum:
    """Heavy-ball momentum on the pseudo-gradient (the rule of FedAvgM).

    ``v <- beta v + (x - y)``, ``x <- x - eta v``, with ``v`` starting at 0.

    Parameters
    ----------
    options
        The server learning rate and momentum.
    """

    def __init__(self, *, options: MomentumOptions) -> None:
        self._options = options

    def init(self, params: Params) -> MomentumState:
        """Zero velocity."""
        return MomentumState(velocity=_zeros64(params))

    def step(
        self, *, state: MomentumState, params: Params, aggregate: Params
    ) -> tuple[MomentumState, Params]:
        """One momentum step on ``params - aggregate``."""
        lr, beta = self._options.server_lr, self._options.server_momentum
        x, y = as_float64(params), as_float64(aggregate)
        velocity = {k: beta * state.velocity[k] + (x[k] - y[k]) for k in x}
        new = {k: x[k] - lr * velocity[k] for k in x}
        return MomentumState(velocity=velocity), cast_like(new, params)

    def state_tensors(self, state: MomentumState) -> Mapping[str, Params]:
        """One slot, ``velocity``."""
        return {"velocity": state.velocity}

    def state_from_tensors(self, *, slots: Mapping[str, Params], params: Params) -> MomentumState:
        """Read the ``velocity`` slot."""
        return MomentumState(velocity=_slot(slots, "velocity", params))


@dataclass(frozen=True)
class AdaptiveOptions:
    """``[strategy]`` options of ``fedadam`` and ``fedyogi``."""

    server_lr: float = help_field(0.01, "server learning rate eta (> 0)")
    beta1: float = help_field(0.9, "first-moment decay, in [0, 1)")
    beta2: float = help_field(0.99, "second-moment decay, in [0, 1)")
    tau: float = help_field(1e-3, "adaptivity tau (> 0); v starts at tau^2")

    def __post_init__(self) -> None:
        require(
            positive(self.server_lr), key="server_lr", value=self.server_lr, expected="positive"
        )
        require(0.0 <= self.beta1 < 1.0, key="beta1", value=self.beta1, expected="in [0, 1)")
        require(0.0 <= self.beta2 < 1.0, key="beta2", value=self.beta2, expected="in [0, 1)")
        require(positive(self.tau), key="tau", value=self.tau, expected="positive")


@dataclass(frozen=True)
class AdagradOptions:
    """``[strategy]`` options of ``fedadagrad`` (Adagrad has no second-moment decay)."""

    server_lr: float = help_field(0.1, "server learning rate eta (> 0)")
    beta1: float = help_field(0.9, "first-moment decay, in [0, 1)")
    tau: float = help_field(1e-3, "adaptivity tau (> 0); v starts at tau^2")

    def __post_init__(self) -> None:
        require(
            positive(self.server_lr), key="server_lr", value=self.server_lr, expected="positive"
        )
        require(0.0 <= self.beta1 < 1.0, key="beta1", value=self.beta1, expected="in [0, 1)")
        require(positive(self.tau), key="tau", value=self.tau, expected="positive")


@dataclass(frozen=True)
class AdaptiveState:
    """The FedOpt rule state: first moment ``m`` and second moment ``v``, float64."""

    m: Params
    v: Params


Variant = Literal["adam", "yogi", "adagrad"]


class AdaptiveServerOpt:
    """Reddi et al.'s adaptive server step (Algorithm 2), Adam, Yogi or Adagrad.

    With ``Delta = aggregate - x``::

        m <- beta1 m + (1 - beta1) Delta
        v <- v + Delta^2                                     (adagrad)
        v <- v - (1 - beta2) Delta^2 sign(v - Delta^2)       (yogi)
        v <- beta2 v + (1 - beta2) Delta^2                   (adam)
        x <- x + eta m / (sqrt(v) + tau)

    starting from ``m = 0`` and ``v = tau^2`` (the paper asks ``v_{-1} >= tau^2``;
    we take the smallest allowed value), with no bias correction, as in the paper.

    Parameters
    ----------
    variant
        ``"adam"``, ``"yogi"`` or ``"adagrad"``.
    server_lr, beta1, beta2, tau
        Eta, the decays and the adaptivity; ``beta2`` is unused by Adagrad.
    """

    def __init__(
        self, *, variant: Variant, server_lr: float, beta1: float, beta2: float, tau: float
    ) -> None:
        self._variant: Variant = variant
        self._lr, self._beta1, self._beta2, self._tau = server_lr, beta1, beta2, tau

    def init(self, params: Params) -> AdaptiveState:
        """``m = 0``, ``v = tau^2``."""
        zeros = _zeros64(params)
        return AdaptiveState(
            m=zeros, v={k: np.full_like(z, self._tau**2) for k, z in zeros.items()}
        )

    def _second_moment(self, v: np.ndarray, square: np.ndarray) -> np.ndarray:
        out: np.ndarray
        if self._variant == "adagrad":
            out = v + square
        elif self._variant == "yogi":
            out = v - (1.0 - self._beta2) * square * np.sign(v - square)
        else:
            out = self._beta2 * v + (1.0 - self._beta2) * square
        return out

    def step(
        self, *, state: AdaptiveState, params: Params, aggregate: Params
    ) -> tuple[AdaptiveState, Params]:
        """One adaptive step on ``Delta = aggregate - params``."""
        x, y = as_float64(params), as_float64(aggregate)
        m: Params = {}
        v: Params = {}
        new: Params = {}
        for k in x:
            delta = y[k] - x[k]
            m[k] = self._beta1 * state.m[k] + (1.0 - self._beta1) * delta
            v[k] = self._second_moment(state.v[k], delta * delta)
            new[k] = x[k] + self._lr * m[k] / (np.sqrt(v[k]) + self._tau)
        return AdaptiveState(m=m, v=v), cast_like(new, params)

    def state_tensors(self, state: AdaptiveState) -> Mapping[str, Params]:
        """Slots ``m`` and ``v``."""
        return {"m": state.m, "v": state.v}

    def state_from_tensors(self, *, slots: Mapping[str, Params], params: Params) -> AdaptiveState:
        """Read the ``m`` and ``v`` slots."""
        return AdaptiveState(m=_slot(slots, "m", params), v=_slot(slots, "v", params))


class FedAvgM(ComposedStrategy[MomentumState]):
    """FedAvgM: FedAvg with server momentum (Hsu et al. 2019).

    Hsu, Qi and Brown, "Measuring the Effects of Non-Identical Data
    Distribution for Federated Visual Classification", arXiv:1909.06335
    (2019). The server averages the updates by examples (as FedAvg does) into
    ``y`` and takes a heavy-ball step on the pseudo-gradient ``x - y``:
    ``v <- beta v + (x - y)``, ``x <- x - eta v``, with ``v`` starting at 0.
    With ``server_lr = 1`` and ``server_momentum = 0`` it is FedAvg.

    Parameters
    ----------
    hparams
        Local-training settings sent to every site each round.
    options
        ``server_lr`` (eta) and ``server_momentum`` (beta); defaults when ``None``.
    """

    def __init__(
        self, *, hparams: Mapping[str, HParamValue], options: MomentumOptions | None = None
    ) -> None:
        super().__init__(
            name="fedavgm",
            hparams=hparams,
            aggregator=WeightedMean(),
            rule=ServerMomentum(options=options or MomentumOptions()),
        )


def _adaptive_rule(
    variant: Literal["adam", "yogi", "adagrad"], options: AdaptiveOptions | AdagradOptions
) -> AdaptiveServerOpt:
    """The server optimiser of one FedOpt variant (Adagrad keeps no ``beta2``)."""
    return AdaptiveServerOpt(
        variant=variant,
        server_lr=options.server_lr,
        beta1=options.beta1,
        beta2=options.beta2 if isinstance(options, AdaptiveOptions) else 0.0,
        tau=options.tau,
    )


class FedAdam(ComposedStrategy[AdaptiveState]):
    """FedAdam: Adam on the server's pseudo-gradient (Reddi et al. 2021).

    Reddi, Charles, Zaheer, Garrett, Rush, Konečný, Kumar and McMahan,
    "Adaptive Federated Optimization", ICLR 2021, Algorithm 2. With
    ``Delta = y - x`` for the example-weighted mean ``y`` of the updates:
    ``m <- beta1 m + (1 - beta1) Delta``, ``v <- beta2 v + (1 - beta2) Delta^2``,
    ``x <- x + eta m / (sqrt(v) + tau)``. Initialisation: ``m = 0`` and
    ``v = tau^2`` (the paper requires ``v_{-1} >= tau^2``; we take equality).
    No bias correction, as in the paper. The paper's ``Delta`` is the plain
    mean over sampled clients; here it is weighted by examples, as in FedAvg.

    Parameters
    ----------
    hparams
        Local-training settings sent to every site each round.
    options
        ``server_lr``, ``beta1``, ``beta2`` and ``tau``; defaults when ``None``.
    """

    def __init__(
        self, *, hparams: Mapping[str, HParamValue], options: AdaptiveOptions | None = None
    ) -> None:
        super().__init__(
            name="fedadam",
            hparams=hparams,
            aggregator=WeightedMean(),
            rule=_adaptive_rule("adam", options or AdaptiveOptions()),
        )


class FedYogi(ComposedStrategy[AdaptiveState]):
    """FedYogi: Yogi on the server's pseudo-gradient (Reddi et al. 2021).

    Reddi et al., "Adaptive Federated Optimization", ICLR 2021, Algorithm 2.
    As :class:`FedAdam`, except that the second moment moves additively, by
    the sign rule ``v <- v - (1 - beta2) Delta^2 sign(v - Delta^2)``, so it
    grows no faster than Adam's and shrinks only slowly. Initialisation:
    ``m = 0`` and ``v = tau^2`` (the paper's ``v_{-1} >= tau^2``, with
    equality); ``sign(0) = 0``; no bias correction; ``Delta`` weighted by examples.

    Parameters
    ----------
    hparams
        Local-training settings sent to every site each round.
    options
        ``server_lr``, ``beta1``, ``beta2`` and ``tau``; defaults when ``None``.
    """

    def __init__(
        self, *, hparams: Mapping[str, HParamValue], options: AdaptiveOptions | None = None
    ) -> None:
        super().__init__(
            name="fedyogi",
            hparams=hparams,
            aggregator=WeightedMean(),
            rule=_adaptive_rule("yogi", options or AdaptiveOptions()),
        )


class FedAdagrad(ComposedStrategy[AdaptiveState]):
    """FedAdagrad: Adagrad with momentum on the server's pseudo-gradient (Reddi et al. 2021).

    Reddi et al., "Adaptive Federated Optimization", ICLR 2021, Algorithm 2.
    As :class:`FedAdam`, except that the second moment accumulates every
    round's square without decay, ``v <- v + Delta^2``, so the step size only
    shrinks. Initialisation: ``m = 0`` and ``v = tau^2`` (the paper's
    ``v_{-1} >= tau^2``, with equality); no bias correction; ``Delta``
    weighted by examples. There is no ``beta2``.

    Parameters
    ----------
    hparams
        Local-training settings sent to every site each round.
    options
        ``server_lr``, ``beta1`` and ``tau``; defaults when ``None``.
    """

    def __init__(
        self, *, hparams: Mapping[str, HParamValue], options: AdagradOptions | None = None
    ) -> None:
        super().__init__(
            name="fedadagrad",
            hparams=hparams,
            aggregator=WeightedMean(),
            rule=_adaptive_rule("adagrad", options or AdagradOptions()),
        )
