"""Byzantine-robust aggregation: coordinate median, trimmed mean, (Multi-)Krum, geometric median.

Each rule combines the updates' tensors as sent (full weights or deltas; all
four are translation-equivariant, so both give the same model up to
rounding, except that the example-weighted trimmed mean may keep a
different one of two sites whose values rounding brings within an ulp, and
so weigh the survivors differently), then replaces the global model. They
are deterministic and do not depend on the order of sites: updates are
stacked in sorted site order and ties are broken by site name. None is
linear in the updates, so none can run under secure aggregation.

The coordinate-wise median and trimmed mean come in two weightings: every
site's vote counts once (``weighting = "uniform"``, as in Yin et al.), or in
proportion to its example count with no site above ``max_weight_share`` of
the total (``weighting = "examples"``, the default; see
:mod:`flmi.strategies.weighted_order`).
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
from flmi.strategies.weighted_order import vote_weights, weighted_median, weighted_trimmed_mean

#: The ``weighting`` options of the coordinate-wise median and trimmed mean.
WEIGHTINGS = ("examples", "uniform")


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


def _trim_count(trim_fraction: float, n: int) -> int:
    """``floor(trim_fraction n)``, at most ``(n - 1) // 2`` so that one value is left."""
    # The small slack keeps e.g. 0.29 * 100 = 28.999999999999996 at 29.
    return min(math.floor(trim_fraction * n + 1e-9), (n - 1) // 2)


def _site_votes(items: Sequence[Contribution], max_weight_share: float) -> np.ndarray:
    return vote_weights([c.weight for c in items], max_share=max_weight_share)


class WeightedCoordinateMedian:
    """Coordinate-wise median with each site's vote weighted by its example count.

    Per coordinate: the value at which the cumulative (capped) weight first
    exceeds half of the total; the mean of the two values on either side when
    it reaches exactly half. See
    :func:`flmi.strategies.weighted_order.weighted_median`.

    Parameters
    ----------
    max_weight_share
        No site's vote exceeds this share of the total
        (:func:`flmi.strategies.weighted_order.vote_weights`).
    """

    def __init__(self, *, max_weight_share: float) -> None:
        self._max_weight_share = max_weight_share

    def combine(
        self, *, reference: Params, kind: UpdateKind, items: Sequence[Contribution]
    ) -> Params:
        """The weighted median of every coordinate over the sites."""
        votes = _site_votes(items, self._max_weight_share)
        out = {
            name: weighted_median([c.tensors[name] for c in items], votes).reshape(
                reference[name].shape
            )
            for name in reference
        }
        return cast_like(out, reference)


class WeightedCoordinateTrimmedMean:
    """Coordinate-wise trimmed mean: drop ``k`` sites at each end, weighted mean of the rest.

    ``k = floor(trim_fraction n)`` values are dropped at each end by *count*,
    as in the unweighted rule, so a site with an extreme value is dropped
    whole however many examples it reports; the survivors are averaged with
    their (capped) example weights. See
    :func:`flmi.strategies.weighted_order.weighted_trimmed_mean`.

    Parameters
    ----------
    trim_fraction
        ``beta`` in ``[0, 0.5)``.
    max_weight_share
        No site's weight exceeds this share of the total.
    """

    def __init__(self, *, trim_fraction: float, max_weight_share: float) -> None:
        self._trim_fraction = trim_fraction
        self._max_weight_share = max_weight_share

    def combine(
        self, *, reference: Params, kind: UpdateKind, items: Sequence[Contribution]
    ) -> Params:
        """The weighted trimmed mean of every coordinate over the sites."""
        votes = _site_votes(items, self._max_weight_share)
        k = _trim_count(self._trim_fraction, len(items))
        out = {
            name: weighted_trimmed_mean([c.tensors[name] for c in items], votes, k).reshape(
                reference[name].shape
            )
            for name in reference
        }
        return cast_like(out, reference)


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
        k = _trim_count(self._trim_fraction, n)
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

    Minimises ``sum_i p_i ||z - y_i||`` over all tensors as one vector, with
    ``p_i`` each site's share of the capped example counts
    (:func:`flmi.strategies.weighted_order.vote_weights`), or ``1 / n``.
    Starts at the weighted mean and repeats
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
    max_weight_share
        No site's share of the weights exceeds this; ``None``: one vote per site.
    """

    def __init__(self, *, max_iter: int, eps: float, max_weight_share: float | None) -> None:
        self._max_iter, self._eps = max_iter, eps
        self._max_weight_share = max_weight_share

    def combine(
        self, *, reference: Params, kind: UpdateKind, items: Sequence[Contribution]
    ) -> Params:
        """The approximate geometric median of the updates."""
        names = sorted(reference)
        points = {name: _stack(items, name) for name in names}
        votes = (
            np.ones(len(items), dtype=np.float64)
            if self._max_weight_share is None
            else _site_votes(items, self._max_weight_share)
        )
        shares = votes / float(np.sum(votes))

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


_WEIGHTING_HELP = (
    '"examples" (each site\'s vote in proportion to its example count) or "uniform" '
    "(one vote per site)"
)
_SHARE_HELP = (
    'with weighting = "examples", the largest share of the vote one site may hold, '
    "in (0, 1]; at or below 1/n every site votes equally"
)


def _check_weighting(weighting: str, max_weight_share: float) -> None:
    require(
        weighting in WEIGHTINGS,
        key="weighting",
        value=weighting,
        expected=" or ".join(f'"{w}"' for w in WEIGHTINGS),
    )
    require(
        math.isfinite(max_weight_share) and 0.0 < max_weight_share <= 1.0,
        key="max_weight_share",
        value=max_weight_share,
        expected="in (0, 1]",
    )


@dataclass(frozen=True)
class MedianOptions:
    """``[strategy]`` options of ``median``."""

    weighting: str = help_field("examples", _WEIGHTING_HELP)
    max_weight_share: float = help_field(0.3, _SHARE_HELP)

    def __post_init__(self) -> None:
        _check_weighting(self.weighting, self.max_weight_share)


@dataclass(frozen=True)
class TrimmedMeanOptions:
    """``[strategy]`` options of ``trimmed_mean``."""

    trim_fraction: float = help_field(
        0.2, "share of updates dropped at each end, per coordinate, in [0, 0.5)"
    )
    weighting: str = help_field(
        "examples", _WEIGHTING_HELP + " in the mean of the values left after trimming"
    )
    max_weight_share: float = help_field(0.3, _SHARE_HELP)

    def __post_init__(self) -> None:
        require(
            0.0 <= self.trim_fraction < 0.5,
            key="trim_fraction",
            value=self.trim_fraction,
            expected="in [0, 0.5)",
        )
        _check_weighting(self.weighting, self.max_weight_share)


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
    weighting: str = help_field("examples", _WEIGHTING_HELP)
    max_weight_share: float = help_field(0.3, _SHARE_HELP)

    def __post_init__(self) -> None:
        require(self.max_iter >= 1, key="max_iter", value=self.max_iter, expected="at least 1")
        require(positive(self.eps), key="eps", value=self.eps, expected="positive")
        _check_weighting(self.weighting, self.max_weight_share)


class Median(ComposedStrategy[NoState]):
    """Coordinate-wise median of the updates (Yin et al. 2018), optionally example-weighted.

    Yin, Chen, Ramchandran and Bartlett, "Byzantine-Robust Distributed
    Learning: Towards Optimal Statistical Rates", ICML 2018. Every coordinate
    of the new global model is the median of that coordinate over the
    sampled sites' updates. Uniform: the middle value (the mean of the two
    middle values when their number is even). Example-weighted: the value at
    which the cumulative weight of the sorted values first exceeds half of
    the total (the mean of the two neighbouring values when it reaches
    exactly half; with equal weights this is the uniform median). Ties in
    value are ordered by site name.

    **Weighting.** With ``weighting = "examples"`` (the default) each site's
    vote counts in proportion to the examples it reports, as in FedAvg and
    the geometric median, so that a hospital with 20 images does not weigh
    as much as one with 200. Reported counts cannot be checked, so no site
    may hold more than ``max_weight_share`` (default 0.3) of the total: a
    site claiming a huge count gets that share and no more, the others keep
    their ratios (:func:`flmi.strategies.weighted_order.vote_weights`).
    ``weighting = "uniform"`` is the rule of the paper: one vote per site.

    Parameters
    ----------
    hparams
        Local-training settings sent to every site each round.
    options
        ``weighting`` and ``max_weight_share``; defaults when ``None``.
    """

    def __init__(
        self, *, hparams: Mapping[str, HParamValue], options: MedianOptions | None = None
    ) -> None:
        options = options or MedianOptions()
        aggregator: CoordinateMedian | WeightedCoordinateMedian = (
            WeightedCoordinateMedian(max_weight_share=options.max_weight_share)
            if options.weighting == "examples"
            else CoordinateMedian()
        )
        super().__init__(name="median", hparams=hparams, aggregator=aggregator, rule=Replace())


class TrimmedMean(ComposedStrategy[NoState]):
    """Coordinate-wise trimmed mean of the updates (Yin et al. 2018), optionally example-weighted.

    Yin, Chen, Ramchandran and Bartlett, "Byzantine-Robust Distributed
    Learning: Towards Optimal Statistical Rates", ICML 2018. For every
    coordinate the ``k = floor(trim_fraction * n)`` largest and ``k``
    smallest values over the ``n`` updates are dropped and the rest averaged.
    Trimming counts sites, never weight, in both weightings: a site whose
    value is extreme is dropped whole, however many examples it reports
    (trimming weight mass instead would let a large site survive in part).
    The values left are averaged without weights (uniform) or with their
    capped example weights. With ``trim_fraction = 0`` it is the plain mean
    (uniform) or FedAvg's weighted mean with capped weights (examples).

    **Weighting.** With ``weighting = "examples"`` (the default) each site's
    vote counts in proportion to the examples it reports, as in FedAvg and
    the geometric median, so that a hospital with 20 images does not weigh
    as much as one with 200. Reported counts cannot be checked, so no site
    may hold more than ``max_weight_share`` (default 0.3) of the total: a
    site claiming a huge count gets that share and no more, the others keep
    their ratios (:func:`flmi.strategies.weighted_order.vote_weights`).
    ``weighting = "uniform"`` is the rule of the paper: one vote per site.

    Parameters
    ----------
    hparams
        Local-training settings sent to every site each round.
    options
        ``trim_fraction``, ``weighting`` and ``max_weight_share``; defaults when ``None``.
    """

    def __init__(
        self, *, hparams: Mapping[str, HParamValue], options: TrimmedMeanOptions | None = None
    ) -> None:
        options = options or TrimmedMeanOptions()
        aggregator: CoordinateTrimmedMean | WeightedCoordinateTrimmedMean = (
            WeightedCoordinateTrimmedMean(
                trim_fraction=options.trim_fraction,
                max_weight_share=options.max_weight_share,
            )
            if options.weighting == "examples"
            else CoordinateTrimmedMean(trim_fraction=options.trim_fraction)
        )
        super().__init__(
            name="trimmed_mean", hparams=hparams, aggregator=aggregator, rule=Replace()
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
    as one vector, ``p_i`` the site's weight share), found by smoothed
    Weiszfeld iterations from the weighted mean. Its breakdown point is 1/2:
    updates holding less than half of the weight cannot move it arbitrarily
    far.

    **Weighting.** As for ``median``: with ``weighting = "examples"`` (the
    default) ``p_i`` follows the example counts the sites report, but no
    site holds more than ``max_weight_share`` (default 0.3) of the total, so
    a site that claims a huge count cannot buy the half of the weight that
    would let it place the model anywhere; ``weighting = "uniform"`` gives
    every site ``1 / n``. ``max_weight_share = 1`` is RFA's uncapped rule.

    Parameters
    ----------
    hparams
        Local-training settings sent to every site each round.
    options
        ``max_iter``, ``eps``, ``weighting`` and ``max_weight_share``;
        defaults when ``None``.
    """

    def __init__(
        self, *, hparams: Mapping[str, HParamValue], options: GeometricMedianOptions | None = None
    ) -> None:
        options = options or GeometricMedianOptions()
        super().__init__(
            name="geometric_median",
            hparams=hparams,
            aggregator=WeiszfeldMedian(
                max_iter=options.max_iter,
                eps=options.eps,
                max_weight_share=(
                    options.max_weight_share if options.weighting == "examples" else None
                ),
            ),
            rule=Replace(),
        )
