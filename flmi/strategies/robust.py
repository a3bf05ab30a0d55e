"""Byzantine-robust aggregation: coordinate median, trimmed mean, (Multi-)Krum, geometric median.

Each rule combines the updates' tensors as sent (full weights or deltas; all
four are translation-equivariant, so both give the same model up to
rounding), then replaces the global model. They are deterministic and do not
depend on the order of sites: updates are stacked in sorted site order and
ties are broken by site name. None is linear in the updates, so none can run
under secure aggregation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from flmi.core.errors import ConfigError
from flmi.core.messages import HParamValue, UpdateKind
from flmi.core.params import Params
from flmi.strategies.base import ComposedStrategy, Contribution, NoState, Replace, cast_like
from flmi.strategies.options import help_field, positive, require


def _stack(items: Sequence[Contribution], name: str) -> np.ndarray:
    """Tensor ``name`` of every item, in item order, as one float64 array ``(n, *shape)``."""
    return np.stack([np.asarray(c.tensors[name], dtype=np.float64) for c in items])


def _squared_distance(a: Params, b: Params) -> float:
    """``||a - b||^2`` over every tensor, summed in name order in float64."""
    total = 0.0
    for name in sorted(a):
        diff = np.asarray(a[name], dtype=np.float64) - np.asarray(b[name], dtype=np.float64)
        total += float(np.sum(diff * diff))
    return total


class CoordinateMedian:
    """Coordinate-wise median of the updates (unweighted; mean of the middle two when n is even)."""

    def combine(
        self, *, reference: Params, kind: UpdateKind, items: Sequence[Contribution]
    ) -> Params:
        """The median of every coordinate over the sites."""
        return cast_like(
            {name: np.median(_stack(items, name), axis=0) for name in reference}, reference
        )


class CoordinateTrimmedMean:
    """Coordinate-wise trimmed mean: drop ``floor(beta n)`` values at each end, average the rest.

    Parameters
    ----------
    trim_fraction
        ``beta`` in ``[0, 0.5)``; unweighted, as in Yin et al.
    """

    def __init__(self, *, trim_fraction: float) -> None:
        self._trim_fraction = trim_fraction

    def combine(
        self, *, reference: Params, kind: UpdateKind, items: Sequence[Contribution]
    ) -> Params:
        """The trimmed mean of every coordinate over the sites."""
        n = len(items)
        # The small slack keeps e.g. 0.29 * 100 = 28.999999999999996 at 29.
        k = min(math.floor(self._trim_fraction * n + 1e-9), (n - 1) // 2)
        out = {}
        for name in reference:
            ordered = np.sort(_stack(items, name), axis=0)
            out[name] = np.mean(ordered[k : n - k], axis=0)
        return cast_like(out, reference)


class KrumSelection:
    """(Multi-)Krum: keep the ``m`` updates closest to their ``n - f - 2`` nearest neighbours.

    Each update's score is the sum of squared Euclidean distances (over all
    tensors) to its ``n - f - 2`` nearest other updates; the ``m`` lowest
    scores win (ties go to the site name that sorts first) and are averaged
    without weights. ``m = 1`` returns the chosen update exactly.

    Parameters
    ----------
    num_byzantine
        ``f``, the number of faulty sites tolerated; needs ``n > 2 f + 2`` updates.
    num_selected
        ``m``, how many updates are averaged (at most ``n``).
    """

    def __init__(self, *, num_byzantine: int, num_selected: int) -> None:
        self._f, self._m = num_byzantine, num_selected

    def select(self, items: Sequence[Contribution]) -> list[int]:
        """Indices into ``items`` of the selected updates, in ascending order.

        Raises
        ------
        ConfigError
            ``n <= 2 f + 2`` (naming ``strategy.num_byzantine``) or ``m > n``
            (naming ``strategy.num_selected``).
        """
        n, f, m = len(items), self._f, self._m
        if n <= 2 * f + 2:
            raise ConfigError(
                f"strategy.num_byzantine = {f}: Krum needs more than 2f + 2 = {2 * f + 2} "
                f"updates per round, got {n}; lower strategy.num_byzantine or sample more sites"
            )
        if m > n:
            raise ConfigError(
                f"strategy.num_selected = {m} exceeds the {n} updates of this round; lower it"
            )
        distances = np.zeros((n, n), dtype=np.float64)
        for i in range(n):
            for j in range(i + 1, n):
                d = _squared_distance(items[i].tensors, items[j].tensors)
                distances[i, j] = distances[j, i] = d
        nearest = n - f - 2
        scores = np.array(
            [float(np.sum(np.sort(np.delete(distances[i], i))[:nearest])) for i in range(n)]
        )
        return sorted(int(i) for i in np.argsort(scores, kind="stable")[:m])

    def combine(
        self, *, reference: Params, kind: UpdateKind, items: Sequence[Contribution]
    ) -> Params:
        """The chosen update (``m = 1``) or the plain mean of the ``m`` chosen."""
        chosen = [items[i] for i in self.select(items)]
        if len(chosen) == 1:
            return cast_like(
                {k: np.array(v, copy=True) for k, v in chosen[0].tensors.items()}, reference
            )
        out = {}
        for name in reference:
            acc = np.zeros(reference[name].shape, dtype=np.float64)
            for c in chosen:
                acc += np.asarray(c.tensors[name], dtype=np.float64)
            out[name] = acc / len(chosen)
        return cast_like(out, reference)


class WeiszfeldMedian:
    """The example-weighted geometric median by smoothed Weiszfeld iterations (RFA).

    Minimises ``sum_i p_i ||z - y_i||`` with ``p_i = n_i / sum n`` over all
    tensors as one vector. Starts at the weighted mean and repeats
    ``z <- sum_i b_i y_i / sum_i b_i`` with ``b_i = p_i / max(eps, ||z - y_i||)``
    until an iteration moves ``z`` by at most ``eps * (1 + ||z||)``, or for
    ``max_iter`` iterations. (A test on the objective would stop far too
    early: one huge outlier dominates it.)

    Parameters
    ----------
    max_iter
        Most Weiszfeld iterations.
    eps
        Smoothing: distances below ``eps`` count as ``eps`` (Pillutla et
        al.'s nu, which keeps the weights finite when ``z`` sits on an
        update); also the stopping tolerance on the move of ``z``.
    """

    def __init__(self, *, max_iter: int, eps: float) -> None:
        self._max_iter, self._eps = max_iter, eps

    def combine(
        self, *, reference: Params, kind: UpdateKind, items: Sequence[Contribution]
    ) -> Params:
        """The approximate geometric median of the updates."""
        names = sorted(reference)
        points = {name: _stack(items, name) for name in names}
        total = float(sum(c.weight for c in items))
        shares = np.array([c.weight / total for c in items], dtype=np.float64)

        def combination(coef: np.ndarray) -> dict[str, np.ndarray]:
            norm = coef / np.sum(coef)
            out = {}
            for name in names:
                acc = np.zeros(points[name].shape[1:], dtype=np.float64)
                for i in range(len(items)):
                    acc += norm[i] * points[name][i]
                out[name] = acc
            return out

        def distances(z: Mapping[str, np.ndarray]) -> np.ndarray:
            sq = np.zeros(len(items), dtype=np.float64)
            for name in names:
                diff = (points[name] - z[name]).reshape(len(items), -1)
                sq += np.sum(diff * diff, axis=1)
            return np.sqrt(sq)

        z = combination(shares)
        for _ in range(self._max_iter):
            candidate = combination(shares / np.maximum(self._eps, distances(z)))
            moved_sq = sum(float(np.sum((candidate[k] - z[k]) ** 2)) for k in names)
            size_sq = sum(float(np.sum(candidate[k] ** 2)) for k in names)
            z = candidate
            if math.sqrt(moved_sq) <= self._eps * (1.0 + math.sqrt(size_sq)):
                break
        return cast_like(z, reference)


@dataclass(frozen=True)
class TrimmedMeanOptions:
    """``[strategy]`` options of ``trimmed_mean``."""

    trim_fraction: float = help_field(
        0.2, "share of updates dropped at each end, per coordinate, in [0, 0.5)"
    )

    def __post_init__(self) -> None:
        require(
            0.0 <= self.trim_fraction < 0.5,
            key="trim_fraction",
            value=self.trim_fraction,
            expected="in [0, 0.5)",
        )


@dataclass(frozen=True)
class KrumOptions:
    """``[strategy]`` options of ``krum``."""

    num_byzantine: int = help_field(1, "f, faulty sites tolerated (>= 0); needs n > 2f + 2")
    num_selected: int = help_field(1, "m, updates averaged (>= 1); 1 is Krum, more is Multi-Krum")

    def __post_init__(self) -> None:
        require(
            self.num_byzantine >= 0,
            key="num_byzantine",
            value=self.num_byzantine,
            expected="at least 0",
        )
        require(
            self.num_selected >= 1,
            key="num_selected",
            value=self.num_selected,
            expected="at least 1",
        )

    def min_updates(self) -> int:
        """The fewest updates a round needs: ``2 f + 3``, and at least ``m``."""
        return max(2 * self.num_byzantine + 3, self.num_selected)


@dataclass(frozen=True)
class GeometricMedianOptions:
    """``[strategy]`` options of ``geometric_median``."""

    max_iter: int = help_field(100, "most Weiszfeld iterations (>= 1)")
    eps: float = help_field(1e-6, "distance smoothing and stopping tolerance (> 0)")

    def __post_init__(self) -> None:
        require(self.max_iter >= 1, key="max_iter", value=self.max_iter, expected="at least 1")
        require(positive(self.eps), key="eps", value=self.eps, expected="positive")


class Median(ComposedStrategy[NoState]):
    """Coordinate-wise median of the updates (Yin et al. 2018).

    Yin, Chen, Ramchandran and Bartlett, "Byzantine-Robust Distributed
    Learning: Towards Optimal Statistical Rates", ICML 2018. Every coordinate
    of the new global model is the median of that coordinate over the
    sampled sites' updates (unweighted; the mean of the two middle values
    when their number is even). One arbitrarily large update cannot move it
    outside the range of the others when ``n >= 3``.

    Parameters
    ----------
    hparams
        Local-training settings sent to every site each round.
    """

    def __init__(self, *, hparams: Mapping[str, HParamValue]) -> None:
        super().__init__(
            name="median", hparams=hparams, aggregator=CoordinateMedian(), rule=Replace()
        )


class TrimmedMean(ComposedStrategy[NoState]):
    """Coordinate-wise trimmed mean of the updates (Yin et al. 2018).

    Yin, Chen, Ramchandran and Bartlett, "Byzantine-Robust Distributed
    Learning: Towards Optimal Statistical Rates", ICML 2018. For every
    coordinate the ``k = floor(trim_fraction * n)`` largest and ``k``
    smallest values over the ``n`` updates are dropped and the rest averaged
    (unweighted). With ``trim_fraction = 0`` it is the plain mean.

    Parameters
    ----------
    hparams
        Local-training settings sent to every site each round.
    options
        ``trim_fraction`` in ``[0, 0.5)``; defaults when ``None``.
    """

    def __init__(
        self, *, hparams: Mapping[str, HParamValue], options: TrimmedMeanOptions | None = None
    ) -> None:
        options = options or TrimmedMeanOptions()
        super().__init__(
            name="trimmed_mean",
            hparams=hparams,
            aggregator=CoordinateTrimmedMean(trim_fraction=options.trim_fraction),
            rule=Replace(),
        )


class Krum(ComposedStrategy[NoState]):
    """Krum and Multi-Krum: the most central updates (Blanchard et al. 2017).

    Blanchard, El Mhamdi, Guerraoui and Stainer, "Machine Learning with
    Adversaries: Byzantine Tolerant Gradient Descent", NeurIPS 2017. Each
    update is scored by the sum of squared distances to its ``n - f - 2``
    nearest other updates; Krum (``num_selected = 1``) takes the update with
    the lowest score as the new model, Multi-Krum averages the
    ``num_selected`` best, without weights. Needs ``n > 2 f + 2`` updates per
    round and refuses with a :class:`~flmi.core.errors.ConfigError` otherwise.

    Parameters
    ----------
    hparams
        Local-training settings sent to every site each round.
    options
        ``num_byzantine`` (f) and ``num_selected`` (m); defaults when ``None``.
    """

    def __init__(
        self, *, hparams: Mapping[str, HParamValue], options: KrumOptions | None = None
    ) -> None:
        options = options or KrumOptions()
        super().__init__(
            name="krum",
            hparams=hparams,
            aggregator=KrumSelection(
                num_byzantine=options.num_byzantine, num_selected=options.num_selected
            ),
            rule=Replace(),
        )


class GeometricMedian(ComposedStrategy[NoState]):
    """Example-weighted geometric median, RFA (Pillutla et al. 2022).

    Pillutla, Kakade and Harchaoui, "Robust Aggregation for Federated
    Learning", IEEE Transactions on Signal Processing 70, 2022. The new model
    minimises ``sum_i p_i ||z - y_i||`` over the updates ``y_i`` (all tensors
    as one vector, ``p_i = n_i / sum n``), found by smoothed Weiszfeld
    iterations from the weighted mean. Its breakdown point is 1/2: updates
    holding less than half of the weight cannot move it arbitrarily far.

    Parameters
    ----------
    hparams
        Local-training settings sent to every site each round.
    options
        ``max_iter`` and ``eps``; defaults when ``None``.
    """

    def __init__(
        self, *, hparams: Mapping[str, HParamValue], options: GeometricMedianOptions | None = None
    ) -> None:
        options = options or GeometricMedianOptions()
        super().__init__(
            name="geometric_median",
            hparams=hparams,
            aggregator=WeiszfeldMedian(max_iter=options.max_iter, eps=options.eps),
            rule=Replace(),
        )
