"""What sample-level DP-SGD costs on Fed-Heart-Disease: accuracy against epsilon.

FLamby's protocol (``examples/heart_disease/fedavg.toml``: 4 hospitals,
logistic regression, FedAvg, 15 rounds of 100 local SGD steps at batch 4),
with every hospital training by DP-SGD through Opacus: per-example gradients
clipped to 1.1, Poisson sampling, delta 1e-3, and each hospital's noise
multiplier chosen by Opacus so that it has spent exactly the target epsilon
after the 15 rounds. The non-private run with the same seeds is the baseline
measured in this run; the table gives the mean per-hospital test accuracy
(FLamby's metric) over seeds, its ratio to the baseline, and the largest
epsilon any hospital reports having spent (from ``summary.json``).
FLamby reports 0.69-0.70 mean accuracy for epsilon from 1 to 50.

Usage::

    .venv/bin/python benchmarks/privacy_cost_epsilon.py [--seeds 0 1 2 3 4]
        [--epsilons 0.1 1 5 10 50] [--accountant rdp] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path

from flmi.config import load_config
from flmi.report.rundir import SUMMARY
from flmi.report.summary_schema import read_summary
from flmi.simulation import run_experiment

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "heart_disease" / "fedavg.toml"
DELTA = 1e-3
MAX_GRAD_NORM = 1.1


def run(seed: int, *, epsilon: float | None, accountant: str) -> tuple[float, float | None]:
    """Mean per-hospital test accuracy, and the largest epsilon a hospital spent."""
    overrides = [
        f"federation.seed={seed}",
        "baselines.pooled=false",
        "report.bootstrap_resamples=0",
    ]
    if epsilon is not None:
        overrides += [
            "privacy.dp=sample",
            f"privacy.target_epsilon={epsilon}",
            f"privacy.delta={DELTA}",
            f"privacy.max_grad_norm={MAX_GRAD_NORM}",
            f"privacy.accountant={accountant}",
        ]
    config = load_config(CONFIG, overrides=overrides)
    with tempfile.TemporaryDirectory() as tmp:
        result = run_experiment(config=config, out=Path(tmp) / "run")
        summary = read_summary(Path(tmp) / "run" / SUMMARY)
    per_site = result.arms["federated"].per_site
    accuracy = statistics.fmean(m["accuracy"] for m in per_site.values())
    spent = summary.privacy.get("epsilon")
    return accuracy, spent


def table(seeds: Sequence[int], epsilons: Sequence[float], accountant: str) -> list[str]:
    baseline = [run(s, epsilon=None, accountant=accountant)[0] for s in seeds]
    base = statistics.fmean(baseline)
    sd = statistics.stdev(baseline) if len(baseline) > 1 else 0.0
    lines = [
        f"Fed-Heart-Disease, FLamby protocol, DP-SGD (max grad norm {MAX_GRAD_NORM}, "
        f"delta {DELTA}, {accountant} accountant), mean per-hospital test accuracy, "
        f"seeds {list(seeds)}",
        "",
        "| target epsilon | accuracy mean +- sd | ratio to non-private | largest epsilon spent |",
        "| --- | --- | --- | --- |",
        f"| non-private | {base:.3f} +- {sd:.3f} | 1.000 | - |",
    ]
    for epsilon in epsilons:
        runs = [run(s, epsilon=epsilon, accountant=accountant) for s in seeds]
        accuracies = [a for a, _ in runs]
        spent = max(e for _, e in runs if e is not None)
        mean = statistics.fmean(accuracies)
        sd = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
        lines.append(f"| {epsilon:g} | {mean:.3f} +- {sd:.3f} | {mean / base:.3f} | {spent:.3f} |")
        print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--epsilons", type=float, nargs="+", default=[0.1, 1.0, 5.0, 10.0, 50.0])
    parser.add_argument("--accountant", choices=("rdp", "prv"), default="rdp")
    parser.add_argument("--out", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args()
    text = "\n".join(table(args.seeds, args.epsilons, args.accountant))
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
