"""Bootstrap confidence intervals for the metrics clinicians read (numpy only)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

Interval = tuple[float, float]


def bootstrap_ci(
    *,
    labels: np.ndarray,
    scores: np.ndarray,
    metrics: Callable[[np.ndarray, np.ndarray], Mapping[str, float]],
    resamples: int,
    seed: int,
    level: float = 0.95,
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

    Returns
    -------
    dict[str, tuple[float, float]]
        ``{name: (low, high)}``; ``(nan, nan)`` when a metric could be computed
        on fewer than two resamples.
    """
    n = labels.shape[0]
    if n == 0 or resamples < 1:
        return {}
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(resamples):
        index = rng.integers(0, n, size=n)
        for name, value in metrics(labels[index], scores[index]).items():
            if not math.isnan(value):
                draws.setdefault(name, []).append(float(value))
    alpha = (1.0 - level) / 2.0
    out: dict[str, Interval] = {}
    for name in sorted(draws):
        values = np.asarray(draws[name])
        if values.size < 2:
            out[name] = (float("nan"), float("nan"))
            continue
        low, high = np.quantile(values, [alpha, 1.0 - alpha])
        out[name] = (float(low), float(high))
    return out
