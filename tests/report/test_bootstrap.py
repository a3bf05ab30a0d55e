from __future__ import annotations

import numpy as np

from flmi.report.bootstrap import bootstrap_ci


def _accuracy(labels: np.ndarray, correct: np.ndarray) -> dict[str, float]:
    return {"accuracy": float(correct.mean())}


def test_95_percent_interval_covers_the_true_accuracy_92_to_98_percent_of_the_time() -> None:
    # A classifier that is right with probability 0.8 on each of 200 patients:
    # over repeated test sets the 95 % interval should contain 0.8 about 95 % of the time.
    truth, n, draws = 0.8, 200, 400
    rng = np.random.default_rng(12345)
    covered = 0
    for k in range(draws):
        correct = (rng.random(n) < truth).astype(np.float64)
        low, high = bootstrap_ci(
            labels=np.zeros(n), scores=correct, metrics=_accuracy, resamples=400, seed=k
        )["accuracy"]
        covered += low <= truth <= high
    assert 0.92 <= covered / draws <= 0.98


def test_interval_is_seeded_and_contains_the_point_estimate() -> None:
    rng = np.random.default_rng(0)
    correct = (rng.random(100) < 0.7).astype(np.float64)
    a = bootstrap_ci(labels=np.zeros(100), scores=correct, metrics=_accuracy, resamples=200, seed=3)
    b = bootstrap_ci(labels=np.zeros(100), scores=correct, metrics=_accuracy, resamples=200, seed=3)
    assert a == b
    low, high = a["accuracy"]
    assert low <= correct.mean() <= high and high - low < 0.25


def test_metric_undefined_on_every_resample_is_left_out() -> None:
    def nan_metric(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
        return {"auc": float("nan")}

    out = bootstrap_ci(
        labels=np.zeros(5), scores=np.zeros(5), metrics=nan_metric, resamples=10, seed=0
    )
    assert out == {}
