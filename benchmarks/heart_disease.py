"""Fed-Heart-Disease with FLamby's protocol: every example config, seeds 0-4.

Runs ``examples/heart_disease/*.toml`` in-process and prints, per strategy,
the mean of the per-hospital test accuracies at the final round, as
mean +- sd over the seeds, next to FLamby's published means (Ogier du Terrail
et al., NeurIPS 2022). The pooled row comes from the FedAvg file's pooled arm
(FLamby's centralised recipe: Adam, lr 1e-3, batch 4, 50 epochs).

Usage::

    .venv/bin/python benchmarks/heart_disease.py [--seeds 0 1 2 3 4] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from flmi.config import load_config
from flmi.simulation import run_experiment

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "heart_disease"
FLAMBY = {
    "pooled": 0.735,
    "fedavg": 0.685,
    "fedprox": 0.685,
    "scaffold": 0.684,
    "cyclic": 0.718,
    "fedadam": 0.726,
    "fedyogi": 0.731,
    "fedadagrad": 0.731,
}


def mean_site_accuracy(per_site: dict[str, dict[str, float]]) -> float:
    """FLamby's metric: the unweighted mean of the hospitals' test accuracies."""
    return statistics.fmean(m["accuracy"] for m in per_site.values())


def run(name: str, seed: int, *, pooled: bool) -> dict[str, float]:
    """One example config at one seed: {arm: metric}."""
    overrides = [f"federation.seed={seed}", f"baselines.pooled={'true' if pooled else 'false'}"]
    config = load_config(EXAMPLES / f"{name}.toml", overrides=overrides)
    with tempfile.TemporaryDirectory() as tmp:
        result = run_experiment(config=config, out=Path(tmp) / "run")
    return {arm: mean_site_accuracy(dict(r.per_site)) for arm, r in result.arms.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args()
    scores: dict[str, list[float]] = {}
    for name in ("fedavg", "fedprox", "scaffold", "cyclic", "fedadam", "fedyogi", "fedadagrad"):
        for seed in args.seeds:
            arms = run(name, seed, pooled=name == "fedavg")
            scores.setdefault(name, []).append(arms["federated"])
            if "pooled" in arms:
                scores.setdefault("pooled", []).append(arms["pooled"])
    lines = [
        f"Fed-Heart-Disease, FLamby protocol, mean per-hospital test accuracy, seeds {args.seeds}",
        "",
        "| strategy | flmi mean +- sd | FLamby mean | flmi - FLamby |",
        "| --- | --- | --- | --- |",
    ]
    for name in (
        "pooled",
        "fedavg",
        "fedprox",
        "scaffold",
        "cyclic",
        "fedadam",
        "fedyogi",
        "fedadagrad",
    ):
        values = scores[name]
        mean = statistics.fmean(values)
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        lines.append(
            f"| {name} | {mean:.3f} +- {sd:.3f} | {FLAMBY[name]:.3f} | {mean - FLAMBY[name]:+.3f} |"
        )
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
