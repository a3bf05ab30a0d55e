"""Fed-Heart-Disease with FLamby's protocol: every example config, seeds 0-4.

Runs ``examples/heart_disease/*.toml`` in-process and prints, per strategy,
the mean of the per-hospital test accuracies at the final round, as
mean +- sd over the seeds, next to FLamby's published means (Ogier du Terrail
et al., NeurIPS 2022). The pooled row comes from the FedAvg file's pooled arm
(FLamby's centralised recipe: Adam, lr 1e-3, batch 4, 50 epochs).

With ``--tune`` it adds a row with flmi's own settings: a small grid of
strategies and learning rates is scored on a validation split carved from each
hospital's training data (20 %, never the test split), over seeds 0-2; the
best setting by mean validation accuracy is then reported on test over the
seeds, trained on the same reduced training data.

Usage::

    .venv/bin/python benchmarks/heart_disease.py [--seeds 0 1 2 3 4] [--tune] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from collections.abc import Sequence
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


def run(name: str, seed: int, *, pooled: bool, extra: Sequence[str] = ()) -> dict[str, float]:
    """One example config at one seed: {arm: test metric, "val": validation accuracy}."""
    overrides = [
        f"federation.seed={seed}",
        f"baselines.pooled={'true' if pooled else 'false'}",
        *extra,
    ]
    config = load_config(EXAMPLES / f"{name}.toml", overrides=overrides)
    with tempfile.TemporaryDirectory() as tmp:
        result = run_experiment(config=config, out=Path(tmp) / "run")
        lines = (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()
    out = {arm: mean_site_accuracy(dict(r.per_site)) for arm, r in result.arms.items()}
    final = [json.loads(x) for x in lines if json.loads(x)["arm"] == "federated"][-1]
    out["val"] = float((final["val"] or {}).get("accuracy") or float("nan"))
    return out


GRID: list[tuple[str, tuple[str, ...]]] = [
    (
        f"{name} lr={lr}" + (f" server_lr={slr}" if slr else ""),
        (
            f"strategy.name={name}",
            f"federation.lr={lr}",
            *((f"strategy.server_lr={slr}",) if slr else ()),
        ),
    )
    for name, lrs, slrs in [
        ("fedavg", (0.003, 0.01, 0.03), (None,)),
        ("fedadam", (0.003, 0.01), (0.01, 0.03)),
        ("fedyogi", (0.003, 0.01), (0.01, 0.03)),
    ]
    for lr in lrs
    for slr in slrs
]
TUNE_DATA = ("data.val_fraction=0.2",)


def tune(seeds: Sequence[int]) -> tuple[str, tuple[str, ...], list[float]]:
    """The grid setting with the best mean validation accuracy, and its test scores."""
    scored = []
    for label, overrides in GRID:
        vals = [
            run("fedavg", s, pooled=False, extra=(*TUNE_DATA, *overrides))["val"] for s in (0, 1, 2)
        ]
        print(f"  tune {label}: validation accuracy {statistics.fmean(vals):.3f}", flush=True)
        scored.append((statistics.fmean(vals), label, overrides))
    _, label, overrides = max(scored, key=lambda item: item[0])
    tests = [
        run("fedavg", s, pooled=False, extra=(*TUNE_DATA, *overrides))["federated"] for s in seeds
    ]
    return label, overrides, tests


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", type=Path, help="also write the table to this markdown file")
    parser.add_argument("--tune", action="store_true", help="add flmi's own validated setting")
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
    if args.tune:
        label, _overrides, tests = tune(args.seeds)
        mean, sd = statistics.fmean(tests), statistics.stdev(tests) if len(tests) > 1 else 0.0
        pooled = statistics.fmean(scores["pooled"])
        lines.append(
            f"| flmi's own: {label} (chosen on validation) | {mean:.3f} +- {sd:.3f} | - | "
            f"{mean - pooled:+.3f} vs flmi pooled |"
        )
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
