"""Which strategies can aggregate a sum they cannot see into, and how.

Secure aggregation gives the server one sum over the sites and nothing about
any one of them; homomorphic aggregation likewise. A strategy can run on that
only if its aggregate is a *linear* function of the updates:

* the example-weighted mean of full weights, deltas or their shared layers
  (FedAvg, FedProx, the FedOpt family, SCAFFOLD, FedBN and its kin, Ditto's
  global model, fine-tuning) needs ``sum n_i delta_i`` and ``sum n_i``;
* FedNova's step-normalised mean needs ``sum n_i delta_i / tau_i`` and
  ``sum n_i tau_i``;
* SCAFFOLD's control variates need the plain sum of ``delta c_i``;
* DP-FedAvg with noise added at the sites needs the plain sum of the sites'
  clipped, noised changes (every site weighs 1).

Each site therefore contributes the *terms* of that sum (:class:`LinearTerms`):
its count-weighted change, its unweighted extras and the scalars ``n``,
``n * tau`` and ``1``, all of them hidden. The server turns the recovered
sums into one update that the unchanged strategy aggregates to exactly what it
would have computed from the individual updates (:func:`equivalent_update`).
Every rule that needs a site's own update (median, trimmed mean, Krum,
geometric median, clustering) is refused, with the reason (:data:`REFUSED`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from flmi.core.errors import ConfigError, NonFiniteError
from flmi.core.messages import ClientUpdate, UpdateKind
from flmi.core.params import Params
from flmi.privacy.wire import ProtocolError


class LinearRule(StrEnum):
    """How a site weights its change before it is summed."""

    WEIGHTED_MEAN = "weighted_mean"
    STEP_NORMALISED = "step_normalised"
    #: Every site counts once, whatever its example count: DP-FedAvg's sum of
    #: clipped, noised updates (the noise is calibrated to a sum of sites).
    UNWEIGHTED_MEAN = "unweighted_mean"


class Aggregation(StrEnum):
    """``privacy.aggregation``: how the server combines the sites' updates."""

    PLAIN = "plain"
    SECAGG = "secagg"
    HE = "he"


#: Strategies that run on a hidden sum, and the linear rule each needs.
LINEAR: Mapping[str, LinearRule] = {
    "fedavg": LinearRule.WEIGHTED_MEAN,
    "fedprox": LinearRule.WEIGHTED_MEAN,
    "fedavgm": LinearRule.WEIGHTED_MEAN,
    "fedadam": LinearRule.WEIGHTED_MEAN,
    "fedyogi": LinearRule.WEIGHTED_MEAN,
    "fedadagrad": LinearRule.WEIGHTED_MEAN,
    "scaffold": LinearRule.WEIGHTED_MEAN,
    "fedbn": LinearRule.WEIGHTED_MEAN,
    "fedpxn": LinearRule.WEIGHTED_MEAN,
    "cusfl": LinearRule.WEIGHTED_MEAN,
    "ditto": LinearRule.WEIGHTED_MEAN,
    "finetune": LinearRule.WEIGHTED_MEAN,
    "fednova": LinearRule.STEP_NORMALISED,
    "moon": LinearRule.WEIGHTED_MEAN,
}

_OWN = "which needs each site's own update, and a hidden sum shows only the total"

#: Strategies refused under secure or homomorphic aggregation, and why.
REFUSED: Mapping[str, str] = {
    "median": f"the coordinate-wise median picks one site's value per coordinate, {_OWN}",
    "trimmed_mean": f"the trimmed mean drops each coordinate's extreme site values, {_OWN}",
    "krum": f"Krum scores each update by its distances to the others, {_OWN}",
    "geometric_median": (
        f"the geometric median re-weights each update by its distance to the estimate, {_OWN}"
    ),
    "ifca": (
        "IFCA keeps one model per cluster and each site picks one; the per-cluster means "
        "need to know which site chose which cluster, so they are not one sum"
    ),
    "fednorm": (
        "FedNorm averages normalisation layers within each modality group; one sum over "
        "all sites cannot give the per-group means"
    ),
    "cyclic": (
        "cyclic training sends one site's model on at a time, so the 'sum' is that "
        "site's own update and masking hides nothing"
    ),
    "feddyn": (
        "FedDyn's server step needs the unweighted mean and the number of sites that "
        "answered, which the hidden example-weighted sum does not carry"
    ),
}


def linear_rule(strategy: str, *, aggregation: str) -> LinearRule:
    """The linear rule ``strategy`` aggregates with, or a ConfigError saying why it cannot.

    Raises
    ------
    ConfigError
        ``strategy`` is not linear in the updates (or not known to be).
    """
    rule = LINEAR.get(strategy)
    if rule is not None:
        return rule
    why = REFUSED.get(strategy, "it is not known to be linear in the updates")
    allowed = ", ".join(sorted(LINEAR))
    raise ConfigError(
        f"privacy.aggregation = '{aggregation}' cannot run strategy.name = '{strategy}': "
        f"{why}. Under secure or homomorphic aggregation choose one of: {allowed}; "
        "or set privacy.aggregation = 'plain'"
    )


#: The scalars every site contributes, in this order after its tensors.
SCALARS = ("n", "n_tau", "count")
PARAMS_PREFIX = "p/"
EXTRAS_PREFIX = "e/"


@dataclass(frozen=True)
class Layout:
    """The tensors of one round's sum: names (``p/...`` weighted, ``e/...`` unweighted), shapes.

    Every site of a round must contribute the same layout; the server checks
    this before any secret is shared.
    """

    entries: tuple[tuple[str, tuple[int, ...]], ...]

    @property
    def sizes(self) -> list[int]:
        """Elements of each entry."""
        return [math.prod(shape) for _, shape in self.entries]

    @property
    def num_weighted(self) -> int:
        """Elements of the ``p/`` entries, which come first."""
        return sum(
            s for (k, _), s in zip(self.entries, self.sizes, strict=True) if k[:2] == PARAMS_PREFIX
        )

    @property
    def num_floats(self) -> int:
        """Elements of every tensor entry."""
        return sum(self.sizes)

    def to_json(self) -> list[Any]:
        """``[[name, [dims...]], ...]``."""
        return [[k, list(shape)] for k, shape in self.entries]

    @staticmethod
    def from_json(value: Any, *, where: str) -> Layout:
        """Read :meth:`to_json`'s form; anything else is a ProtocolError."""
        if not isinstance(value, list):
            raise ProtocolError(f"{where}: layout is not a list")
        entries: list[tuple[str, tuple[int, ...]]] = []
        for item in value:
            if (
                not isinstance(item, list)
                or len(item) != 2
                or not isinstance(item[0], str)
                or item[0][:2] not in (PARAMS_PREFIX, EXTRAS_PREFIX)
                or not isinstance(item[1], list)
                or not all(
                    isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in item[1]
                )
            ):
                raise ProtocolError(f"{where}: bad layout entry {item!r}")
            entries.append((item[0], tuple(item[1])))
        layout = Layout(entries=tuple(entries))
        if [k for k, _ in entries] != _ordered([k for k, _ in entries]):
            raise ProtocolError(f"{where}: layout entries are not in their canonical order")
        return layout


def _ordered(keys: Sequence[str]) -> list[str]:
    """``p/`` entries sorted, then ``e/`` entries sorted."""
    return sorted(k for k in keys if k.startswith(PARAMS_PREFIX)) + sorted(
        k for k in keys if k.startswith(EXTRAS_PREFIX)
    )


@dataclass(frozen=True)
class LinearTerms:
    """One site's terms of the sum, before weighting, quantisation or encryption.

    Parameters
    ----------
    layout
        The tensors and their shapes.
    weighted
        The ``p/`` values as one float64 vector: the change ``y - x`` (or
        ``(y - x) / tau`` under :attr:`LinearRule.STEP_NORMALISED`), to be
        multiplied by ``n``.
    unweighted
        The ``e/`` values as one float64 vector, summed as they are.
    n, n_tau
        The site's example count (1 under :attr:`LinearRule.UNWEIGHTED_MEAN`)
        and ``n * tau`` (tau: its local steps).
    """

    layout: Layout
    weighted: np.ndarray
    unweighted: np.ndarray
    n: int
    n_tau: int

    def float_vector(self) -> np.ndarray:
        """``[n * weighted, unweighted, n, n * tau, 1]`` in float64 (for encryption)."""
        return np.concatenate(
            [
                np.float64(self.n) * self.weighted,
                self.unweighted,
                np.array([self.n, self.n_tau, 1], dtype=np.float64),
            ]
        )


def linear_terms(update: ClientUpdate, *, reference: Params, rule: LinearRule) -> LinearTerms:
    """A site's terms of the sum from its update and the weights it started from.

    Raises
    ------
    NonFiniteError
        A tensor holds NaN or Inf (the site then sends nothing).
    ConfigError
        The update names a tensor the global model lacks, or reports no local
        step under FedNova's rule.
    """
    if update.num_examples < 1:
        raise ConfigError(f"site '{update.site}' has no training examples to contribute")
    tau = int(update.num_steps)
    if rule is LinearRule.STEP_NORMALISED and tau < 1:
        raise ConfigError(f"site '{update.site}' reports {tau} local steps; FedNova needs >= 1")
    weighted: list[np.ndarray] = []
    unweighted: list[np.ndarray] = []
    entries: list[tuple[str, tuple[int, ...]]] = []
    for name in sorted(update.params):
        if name not in reference:
            raise ConfigError(f"site '{update.site}' update: tensor '{name}' is not in the model")
        value = np.asarray(update.params[name], dtype=np.float64)
        change = value if update.kind is UpdateKind.DELTA else value - reference[name]
        if rule is LinearRule.STEP_NORMALISED:
            change = change / tau
        weighted.append(change.ravel())
        entries.append((PARAMS_PREFIX + name, tuple(int(d) for d in value.shape)))
    for name in sorted(update.extras):
        value = np.asarray(update.extras[name], dtype=np.float64)
        unweighted.append(value.ravel())
        entries.append((EXTRAS_PREFIX + name, tuple(int(d) for d in value.shape)))
    n = 1 if rule is LinearRule.UNWEIGHTED_MEAN else int(update.num_examples)
    terms = LinearTerms(
        layout=Layout(entries=tuple(entries)),
        weighted=np.concatenate(weighted) if weighted else np.zeros(0),
        unweighted=np.concatenate(unweighted) if unweighted else np.zeros(0),
        n=n,
        n_tau=n * max(tau, 0),
    )
    for part, values in (("update", terms.weighted), ("extras", terms.unweighted)):
        if not np.isfinite(values).all():
            raise NonFiniteError(f"site '{update.site}' {part} holds NaN or Inf values")
    return terms


def equivalent_update(
    *,
    layout: Layout,
    weighted_sum: np.ndarray,
    unweighted_sum: np.ndarray,
    n_sum: int,
    n_tau_sum: int,
    rule: LinearRule,
    reference: Params,
    site: str,
) -> ClientUpdate:
    """One delta update that the strategy aggregates to the same result as the sites' own.

    With ``S = sum n_i d_i`` and ``N = sum n_i``: under the weighted mean the
    update is ``S / N`` with ``N`` examples (the mean of one update is itself);
    under the unweighted mean every ``n_i`` is 1, so ``N`` is the number of
    sites summed and the update is their plain mean;
    under FedNova's rule it is ``(sum n_i tau_i / N) * S / N`` with one local
    step (FedNova's result for a single update). Extras are the plain sums
    (SCAFFOLD moves its variate by ``1/N_sites`` times their sum).
    """
    if n_sum < 1:
        raise ProtocolError(f"the recovered example count is {n_sum}; nothing was summed")
    scale = 1.0 / n_sum
    steps = max(1, round(n_tau_sum / n_sum))
    if rule is LinearRule.STEP_NORMALISED:
        scale *= n_tau_sum / n_sum
        steps = 1
    params: Params = {}
    extras: Params = {}
    offset_w = offset_u = 0
    for (key, shape), size in zip(layout.entries, layout.sizes, strict=True):
        name = key[2:]
        if key.startswith(PARAMS_PREFIX):
            values = weighted_sum[offset_w : offset_w + size] * scale
            offset_w += size
            params[name] = values.reshape(shape).astype(reference[name].dtype)
        else:
            values = unweighted_sum[offset_u : offset_u + size]
            offset_u += size
            base = name.split("/", 1)[-1]
            dtype = reference[base].dtype if base in reference else np.dtype(np.float64)
            extras[name] = values.reshape(shape).astype(dtype)
    return ClientUpdate(
        site=site,
        params=params,
        kind=UpdateKind.DELTA,
        num_examples=int(n_sum),
        num_steps=int(steps),
        metrics={},
        extras=extras,
    )
