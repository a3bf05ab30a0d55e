"""Regression metrics: mean absolute error, root mean squared error, R² (numpy only)."""

from __future__ import annotations

import numpy as np

from flmi.core.keys import Metric


def regression_metrics(
    *, targets: np.ndarray, predictions: np.ndarray, loss: float
) -> dict[str, float]:
    """MAE, RMSE and R² of ``predictions`` against ``targets``, in the targets' units.

    Parameters
    ----------
    targets, predictions
        Shape ``(N,)``, aligned.
    loss
        The training objective on these examples, computed by the caller.

    Returns
    -------
    dict[str, float]
        ``loss``, ``mae``, ``rmse`` and ``r2``. R² is NaN when the targets do
        not vary (fewer than two examples, or all equal); every metric is NaN
        for no examples.
    """
    if targets.size == 0:
        return {m.value: float("nan") for m in (Metric.LOSS, Metric.MAE, Metric.RMSE, Metric.R2)}
    t = targets.astype(np.float64)
    error = predictions.astype(np.float64) - t
    total = float(((t - t.mean()) ** 2).sum())
    r2 = 1.0 - float((error**2).sum()) / total if total > 0 else float("nan")
    return {
        Metric.LOSS: float(loss),
        Metric.MAE: float(np.abs(error).mean()),
        Metric.RMSE: float(np.sqrt((error**2).mean())),
        Metric.R2: r2,
    }
