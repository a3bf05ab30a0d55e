"""Bootstrap confidence intervals for the metrics clinicians read (numpy only)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping

import numpy as np

Interval = tuple[float, float]

#: ``metrics(labels, scores)``: one resample's ``{name: value}``.
MetricFn = Callable[[np.ndarray, np.ndarray], Mapping[str, float]]

#: ``resampled(labels, scores, index)``: ``{name: values}``, one value per row of
#: the ``(R, N)`` index matrix, equal to ``metrics(labels[index[r]], scores[index[r]])``.
ResampledMetricFn = Callable[[np.ndarray, np.ndarray, np.ndarray], Mapping[str, np.ndarray]]

#: The most index entries held at once; resamples are drawn and scored in chunks below it.
_CHUNK_ENTRIES = 1 << 22


def resample_chunks(*, n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """The bootstrap's ``(rows, n)`` index matrices, in order, ``resamples`` rows in all.

    Row ``r`` is the ``r``-th draw of ``rng.integers(0, n, size=n)`` from
    ``np.random.default_rng(seed)``: drawing the rows together takes the
    same numbers from the generator as drawing them one at a time.
    """
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_ENTRIES // max(n, 1))
    done = 0
    while done < resamples:
        take = min(rows, resamples - done)
        yield rng.integers(0, n, size=(take, n))
        done += take


def bootstrap_ci(
    *,
    labels: np.ndarray,
    scores: np.ndarray,
    metrics: MetricFn,
    resamples: int,
    seed: int,
    level: float = 0.95,
    resampled: ResampledMetricFn | None = None,
) -> dict[str, Interval]:
    """Percentile bootstrap intervals: resample examples, recompute, take the quantiles.

    Parameters
    ----------
    labels
        The true labels, shape ``(N,)``.
    scores
        Whatever ``metrics`` needs per example (probabilities ``(N, C)``), aligned with ``labels``.
    metrics
        ``metrics(labels, scores)`` returns ``{name: value}``; a value that is
        NaN on a resample (AUC with one class drawn) is left out of that metric's
        quantiles.
    resamples
        Number of bootstrap resamples (e.g. 1000).
    seed
        Seed of the resampling.
    level
        Coverage of the interval.
    resampled
        The same metrics for many resamples at once (see :data:`ResampledMetricFn`);
        when given, ``metrics`` is not called and the intervals are the same.

    Returns
    -------
    dict[str, tuple[float, float]]
        ``{name: (low, high)}``; ``(nan, nan)`` when a metric could be computed
        on fewer than two resamples.
    """
    n = labels.shape[0]
    if n == 0 or resamples < 1:
        return {}
    parts: dict[str, list[np.ndarray]] = {}
    for index in resample_chunks(n=n, resamples=resamples, seed=seed):
        if resampled is not None:
            values = {
                k: np.asarray(v, dtype=np.float64)
                for k, v in resampled(labels, scores, index).items()
            }
        else:
            rows = [metrics(labels[i], scores[i]) for i in index]
            names = sorted({k for row in rows for k in row})
            values = {k: np.array([row.get(k, math.nan) for row in rows]) for k in names}
        for name, column in values.items():
            parts.setdefault(name, []).append(column)
    return percentile_intervals(
        {name: np.concatenate(columns) for name, columns in parts.items()}, level=level
    )


def percentile_intervals(draws: Mapping[str, np.ndarray], *, level: float) -> dict[str, Interval]:
    """``{name: (low, high)}``: the quantiles of each metric's non-NaN bootstrap values.

    A metric with no finite value is left out; one with a single value gets
    ``(nan, nan)``.
    """
    alpha = (1.0 - level) / 2.0
    out: dict[str, Interval] = {}
    for name in sorted(draws):
        values = draws[name][~np.isnan(draws[name])]
        if values.size == 0:
            continue
        if values.size < 2:
            out[name] = (float("nan"), float("nan"))
            continue
        low, high = np.quantile(values, [alpha, 1.0 - alpha])
        out[name] = (float(low), float(high))
    return out
