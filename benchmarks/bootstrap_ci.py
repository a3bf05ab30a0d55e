"""Cost of the final bootstrap intervals: 50 sites and the central test set, 1,000 resamples.

Each site's test split is scored with the classification metrics (loss,
accuracy, balanced accuracy, AUC, sensitivity, specificity) and resampled
``--resamples`` times, then the central test set (every site's split together)
is, as at the end of ``flmi run``. ``--per-resample`` calls the metrics once
per resample (the algorithm before vectorisation) instead.

Usage::

    .venv/bin/python benchmarks/bootstrap_ci.py [--sites 50] [--test 800] [--resamples 1000]
        [--per-resample]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from flmi.report.bootstrap import bootstrap_ci
from flmi.tasks.classification import ClassificationTask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=50)
    parser.add_argument("--test", type=int, default=800, help="test examples over all sites")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--per-resample", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=args.test)
    p1 = np.clip(rng.normal(0.35 + 0.3 * labels, 0.2), 0.0, 1.0).astype(np.float32)
    probs = np.stack([1.0 - p1, p1], axis=1)
    task = ClassificationTask(num_classes=2, in_channels=1, spatial_dims=2, positive_label=1)
    parts = [*np.array_split(np.arange(args.test), args.sites), np.arange(args.test)]
    started = time.perf_counter()
    for k, rows in enumerate(parts):
        if args.per_resample:  # the call the per-resample algorithm took
            bootstrap_ci(
                labels=labels[rows],
                scores=probs[rows],
                metrics=task.metrics,
                resamples=args.resamples,
                seed=k,
            )
            continue
        bootstrap_ci(
            labels=labels[rows],
            scores=probs[rows],
            metrics=task.metrics,
            resamples=args.resamples,
            seed=k,
            resampled=task.resampled_metrics(),
        )
    took = time.perf_counter() - started
    mode = "per resample" if args.per_resample else "vectorised"
    print(
        f"{mode}: {args.sites} sites + central, {args.test} test examples, "
        f"{args.resamples} resamples: {took:.3f} s"
    )


if __name__ == "__main__":
    main()
