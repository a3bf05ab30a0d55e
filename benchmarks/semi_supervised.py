"""Semi-supervised sites on BreastMNIST: do 2 unlabeled hospitals help 2 labeled ones?

Runs ``examples/breastmnist_semi_supervised.toml`` (4 hospitals, iid split,
hospitals 3 and 4 without any training label) in three arms, each over the
seeds:

- ``semi-supervised``: all 4 hospitals; the unlabeled ones train with FixMatch
  (or ``--method pseudo_label``);
- ``labeled only``: the same config with ``federation.semi_supervised =
  "none"``, so the unlabeled hospitals sit out: a federation of the 2 labeled
  hospitals alone, with the same rounds, local epochs and settings;
- ``all labeled`` (reference): the same 4 hospitals with every label kept.

It prints the central test AUC (and balanced accuracy) of the final round as
mean +- sd over the seeds and the ratio of the semi-supervised AUC to the
labeled-only AUC, measured in the same run.

With ``--tune``, the pseudo-label threshold and the aggregation weight of an
unlabeled image (``federation.unlabeled_weight``) are chosen first on
validation data only (the final-round validation AUC, the example-weighted
mean over the hospitals' validation splits, averaged over the tuning seeds);
test data is never looked at to choose anything.

Usage::

    nice .venv/bin/python benchmarks/semi_supervised.py [--seeds 0 1 2] [--tune] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from flmi.config import load_config
from flmi.simulation import run_experiment

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "breastmnist_semi_supervised.toml"
THRESHOLDS = (0.9, 0.95)
WEIGHTS = (0.5, 1.0)


def all_labeled(lr: float) -> list[str]:
    """The reference: hospitals 3 and 4 keep their labels and train like 1 and 2."""
    return [
        "sites.site_3.labeled=true",
        "sites.site_4.labeled=true",
        f"sites.site_3.lr={lr}",
        f"sites.site_4.lr={lr}",
    ]


#: ``--set`` overrides applied to every arm.
EXTRA: list[str] = []


def run(seed: int, overrides: Sequence[str]) -> dict[str, float]:
    """One run: central test AUC and balanced accuracy, validation AUC, wall time."""
    config = load_config(CONFIG, overrides=[f"federation.seed={seed}", *EXTRA, *overrides])
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = run_experiment(config=config, out=Path(tmp) / "run")
        lines = (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()
    final = [json.loads(x) for x in lines if json.loads(x)["arm"] == "federated"][-1]
    central = result.arms["federated"].global_metrics or {}
    return {
        "auc": float(central["auc"]),
        "balanced_accuracy": float(central["balanced_accuracy"]),
        "val_auc": float((final["val"] or {}).get("auc") or float("nan")),
        "wall_s": time.perf_counter() - started,
    }


def tune(seeds: Sequence[int], method: str) -> tuple[float, float]:
    """The (threshold, unlabeled_weight) with the best mean validation AUC over ``seeds``."""
    scores: dict[tuple[float, float], float] = {}
    for threshold, weight in itertools.product(THRESHOLDS, WEIGHTS):
        overrides = _ssl(method, threshold, weight)
        vals = [run(seed, overrides)["val_auc"] for seed in seeds]
        score = scores[(threshold, weight)] = statistics.fmean(vals)
        print(f"  tune threshold={threshold} weight={weight}: val AUC {score:.4f}")
    return max(sorted(scores), key=lambda k: scores[k])


def _ssl(method: str, threshold: float, weight: float) -> list[str]:
    return [
        f"federation.semi_supervised={method}",
        f"federation.pseudo_label_threshold={threshold}",
        f"federation.unlabeled_weight={weight}",
    ]


def _mean_sd(values: Sequence[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {sd:.3f}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--method", choices=["fixmatch", "pseudo_label"], default="fixmatch")
    parser.add_argument("--tune", action="store_true", help="choose threshold and weight on val")
    parser.add_argument("--tune-seeds", type=int, nargs="+", default=[10])
    parser.add_argument("--out", type=Path, help="also write the table as Markdown here")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override for every arm"
    )
    args = parser.parse_args(argv)
    EXTRA.extend(args.set)

    base = load_config(CONFIG, overrides=EXTRA)
    threshold = base.federation.pseudo_label_threshold
    weight = base.federation.unlabeled_weight
    if args.tune:
        print(f"tuning on validation AUC, seeds {args.tune_seeds}")
        threshold, weight = tune(args.tune_seeds, args.method)
    arms = {
        f"semi-supervised ({args.method}, threshold {threshold}, unlabeled_weight {weight})": _ssl(
            args.method, threshold, weight
        ),
        "labeled only (2 labeled hospitals)": ["federation.semi_supervised=none"],
        "all labeled (reference)": [
            *all_labeled(base.federation.lr),
            "federation.semi_supervised=none",
        ],
    }
    results: dict[str, list[dict[str, float]]] = {}
    for name, overrides in arms.items():
        results[name] = []
        for seed in args.seeds:
            row = run(seed, overrides)
            results[name].append(row)
            print(f"  {name} seed {seed}: test AUC {row['auc']:.4f} ({row['wall_s']:.0f} s)")
    ssl_name, labeled_name, _ = list(arms)
    aucs = {name: [r["auc"] for r in rows] for name, rows in results.items()}
    ratio = statistics.fmean(aucs[ssl_name]) / statistics.fmean(aucs[labeled_name])
    lines = [
        f"BreastMNIST, 4 hospitals (iid), hospitals 3 and 4 without labels; "
        f"{base.federation.rounds} rounds of {base.strategy.name}, "
        f"{base.federation.local_epochs} local epoch(s); seeds {args.seeds}",
        "",
        "| arm | central test AUC | central test balanced accuracy | mean wall s |",
        "| --- | --- | --- | --- |",
    ]
    for name, rows in results.items():
        lines.append(
            f"| {name} | {_mean_sd([r['auc'] for r in rows])} | "
            f"{_mean_sd([r['balanced_accuracy'] for r in rows])} | "
            f"{statistics.fmean(r['wall_s'] for r in rows):.0f} |"
        )
    lines += ["", f"ratio semi-supervised / labeled only (test AUC): {ratio:.3f}"]
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
