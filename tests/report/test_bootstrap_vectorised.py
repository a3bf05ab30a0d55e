"""The vectorised bootstrap gives the intervals of the per-resample algorithm."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np
import pytest
from scipy.stats import rankdata

from flmi.report.bootstrap import bootstrap_ci, resample_chunks
from flmi.tasks.classification import ClassificationTask
from flmi.tasks.metrics import resampled_binary_auc


def _reference_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Mid-rank (Mann-Whitney) AUC, written independently of flmi."""
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(scores, method="average")
    return (float(ranks[positive].sum()) - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def _reference_metrics(positive_label: int) -> Callable[[np.ndarray, np.ndarray], dict[str, float]]:
    """The classification metrics of one resample, one metric at a time."""

    def metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
        classes = probs.shape[1]
        predicted = probs.argmax(axis=1)
        picked = np.clip(probs[np.arange(labels.size), labels], 1e-12, 1.0)
        recalls = [
            float((predicted[labels == c] == c).mean())
            for c in range(classes)
            if (labels == c).any()
        ]
        aucs = [_reference_auc(probs[:, c], labels == c) for c in range(classes)]
        defined = [a for a in aucs if not math.isnan(a)]
        auc = (
            aucs[positive_label]
            if classes == 2
            else (float(np.mean(defined)) if defined else math.nan)
        )
        is_pos, said_pos = labels == positive_label, predicted == positive_label
        return {
            "loss": float(-np.log(picked).mean()),
            "accuracy": float((predicted == labels).mean()),
            "balanced_accuracy": float(np.mean(recalls)),
            "auc": auc,
            "sensitivity": float(said_pos[is_pos].mean()) if is_pos.any() else math.nan,
            "specificity": float((~said_pos[~is_pos]).mean()) if (~is_pos).any() else math.nan,
        }

    return metrics


def _reference_bootstrap(
    labels: np.ndarray,
    scores: np.ndarray,
    metrics: Callable[[np.ndarray, np.ndarray], Mapping[str, float]],
    resamples: int,
    seed: int,
) -> dict[str, tuple[float, float]]:
    """The per-resample algorithm: one draw of ``n`` indices and one metrics call per resample."""
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(resamples):
        index = rng.integers(0, labels.shape[0], size=labels.shape[0])
        for name, value in metrics(labels[index], scores[index]).items():
            if not math.isnan(value):
                draws.setdefault(name, []).append(float(value))
    out: dict[str, tuple[float, float]] = {}
    for name in sorted(draws):
        if len(draws[name]) < 2:
            out[name] = (math.nan, math.nan)
            continue
        low, high = np.quantile(np.asarray(draws[name]), [0.025, 0.975])
        out[name] = (float(low), float(high))
    return out


def _task(num_classes: int, positive_label: int) -> ClassificationTask:
    return ClassificationTask(
        num_classes=num_classes,
        in_channels=1,
        spatial_dims=2,
        positive_label=positive_label,
        width=4,
    )


def _scored(n: int, classes: int, seed: int, *, rounded: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n)
    logits = rng.normal(size=(n, classes)) + 1.5 * np.eye(classes)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    if rounded:  # coarse scores: many ties, as from a network that saturates
        probs = np.round(probs, 1)
        probs[:, 0] = 1.0 - probs[:, 1:].sum(axis=1)
    return labels, probs


def _assert_same(
    got: Mapping[str, tuple[float, float]], want: Mapping[str, tuple[float, float]]
) -> None:
    assert list(got) == list(want)
    for name in want:
        for g, w in zip(got[name], want[name], strict=True):
            assert (math.isnan(g) and math.isnan(w)) or abs(g - w) <= 1e-9, (
                name,
                got[name],
                want[name],
            )


@pytest.mark.parametrize(
    ("n", "classes", "positive_label", "rounded"),
    [
        (16, 2, 1, False),
        (16, 2, 0, True),
        (7, 2, 1, True),
        (300, 2, 1, False),
        (40, 3, 0, True),
        (25, 4, 2, False),
    ],
)
def test_classification_intervals_match_the_per_resample_algorithm_to_1e_9(
    n: int, classes: int, positive_label: int, rounded: bool
) -> None:
    labels, probs = _scored(n, classes, seed=n + classes, rounded=rounded)
    task = _task(classes, positive_label)
    got = bootstrap_ci(
        labels=labels,
        scores=probs,
        metrics=task.metrics,
        resamples=1000,
        seed=7,
        resampled=task.resampled_metrics(),
    )
    want = _reference_bootstrap(labels, probs, _reference_metrics(positive_label), 1000, 7)
    assert set(want) == {
        "loss",
        "accuracy",
        "balanced_accuracy",
        "auc",
        "sensitivity",
        "specificity",
    }
    _assert_same(got, want)


def test_a_resample_with_one_class_leaves_the_auc_out_as_before() -> None:
    # 1 positive in 5: about a third of resamples draw no positive, so their AUC
    # and sensitivity are NaN and must be dropped, not counted.
    labels = np.array([1, 0, 0, 0, 0])
    probs = np.array([[0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.9, 0.1], [0.5, 0.5]])
    task = _task(2, 1)
    got = bootstrap_ci(
        labels=labels,
        scores=probs,
        metrics=task.metrics,
        resamples=200,
        seed=1,
        resampled=task.resampled_metrics(),
    )
    _assert_same(got, _reference_bootstrap(labels, probs, _reference_metrics(1), 200, 1))


def test_the_per_resample_fallback_matches_the_reference_too() -> None:
    labels, probs = _scored(30, 2, seed=3, rounded=False)
    task = _task(2, 1)
    got = bootstrap_ci(labels=labels, scores=probs, metrics=task.metrics, resamples=300, seed=5)
    _assert_same(got, _reference_bootstrap(labels, probs, _reference_metrics(1), 300, 5))


def test_chunked_index_rows_are_the_one_at_a_time_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("flmi.report.bootstrap._CHUNK_ENTRIES", 3 * 11)  # three rows a chunk
    rows = np.concatenate(list(resample_chunks(n=11, resamples=10, seed=4)))
    rng = np.random.default_rng(4)
    assert np.array_equal(rows, np.stack([rng.integers(0, 11, size=11) for _ in range(10)]))


def test_resampled_auc_worked_by_hand() -> None:
    # scores 0.1 0.4 0.35 0.8, positives the last two. Row 1: everyone once -> 3/4.
    # Row 2: indices 0, 2, 2, 3 -> negative 0.1 against positives 0.35, 0.35, 0.8 -> 1.
    # Row 3: indices 1, 1, 2, 1 -> negatives 0.4 x3 against positive 0.35 -> 0.
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    positive = np.array([False, False, True, True])
    index = np.array([[0, 1, 2, 3], [0, 2, 2, 3], [1, 1, 2, 1]])
    assert resampled_binary_auc(scores=scores, positive=positive, index=index).tolist() == [
        0.75,
        1.0,
        0.0,
    ]
