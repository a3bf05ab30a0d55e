"""3D lesion segmentation on generated hospitals: FedAvg against pooled training.

Runs ``examples/segmentation_3d.toml`` (MONAI UNet, Dice + cross-entropy,
sliding-window inference) in-process once per seed; each seed draws its own
hospitals and trains both arms with the same budget. Prints, per seed and as
mean +- sd over the seeds, the Dice and HD95 of the final model on the central
test set (every hospital's test cases), the validation Dice the settings were
chosen on, and the ratio of federated to pooled Dice measured in the same run.

The targets: pooled Dice >= 0.70 and FedAvg within 0.05 of
pooled, on the mean over the seeds.

Usage::

    .venv/bin/python benchmarks/segmentation.py [--seeds 0 1 2] [--set KEY=VALUE] [--out F.md]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flmi.config import load_config
from flmi.simulation import run_experiment

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "segmentation_3d.toml"
POOLED_MIN_DICE = 0.70
MAX_GAP = 0.05
ARMS = ("pooled", "federated")


def run_seed(seed: int, extra: Sequence[str]) -> dict[str, Any]:
    """One seed: final central-test Dice and HD95 and final validation Dice of each arm."""
    overrides = [f"federation.seed={seed}", "baselines.pooled=true", *extra]
    config = load_config(EXAMPLE, overrides=overrides)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = run_experiment(config=config, out=Path(tmp) / "run")
        text = (Path(tmp) / "run" / "metrics.jsonl").read_text()
    lines = [json.loads(x) for x in text.splitlines()]
    out: dict[str, Any] = {"seed": seed, "wall_s": time.perf_counter() - started}
    for arm in ARMS:
        final = result.arms[arm].global_metrics or {}
        val = [line for line in lines if line["arm"] == arm][-1]["val"] or {}
        out[arm] = {
            "dice": float(final["dice"]),
            "hd95": float(final["hd95"]),
            "val_dice": float(val.get("dice") or float("nan")),
        }
    return out


def _mean_sd(values: Sequence[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {sd:.3f}"


def table(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table: one line per seed, then the mean ± sd and the checks."""
    lines = [
        "| seed | pooled Dice | FedAvg Dice | FedAvg / pooled | pooled HD95 | FedAvg HD95 "
        "| pooled val Dice | FedAvg val Dice | wall s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        p, f = r["pooled"], r["federated"]
        lines.append(
            f"| {r['seed']} | {p['dice']:.3f} | {f['dice']:.3f} | {f['dice'] / p['dice']:.3f} "
            f"| {p['hd95']:.2f} | {f['hd95']:.2f} | {p['val_dice']:.3f} | {f['val_dice']:.3f} "
            f"| {r['wall_s']:.0f} |"
        )

    def column(arm: str, key: str) -> list[float]:
        return [r[arm][key] for r in rows]

    ratios = [r["federated"]["dice"] / r["pooled"]["dice"] for r in rows]
    lines.append(
        f"| mean ± sd | {_mean_sd(column('pooled', 'dice'))} "
        f"| {_mean_sd(column('federated', 'dice'))} | {_mean_sd(ratios)} "
        f"| {_mean_sd(column('pooled', 'hd95'))} | {_mean_sd(column('federated', 'hd95'))} "
        f"| {_mean_sd(column('pooled', 'val_dice'))} "
        f"| {_mean_sd(column('federated', 'val_dice'))} "
        f"| {statistics.fmean(r['wall_s'] for r in rows):.0f} |"
    )
    pooled = statistics.fmean(column("pooled", "dice"))
    federated = statistics.fmean(column("federated", "dice"))
    gap = pooled - federated
    lines += [
        "",
        f"pooled Dice {pooled:.3f} (needs >= {POOLED_MIN_DICE}): "
        f"{'met' if pooled >= POOLED_MIN_DICE else 'NOT met'}; "
        f"FedAvg {federated:.3f}, {gap:+.3f} below pooled (needs <= {MAX_GAP}): "
        f"{'met' if gap <= MAX_GAP else 'NOT met'}; FedAvg / pooled = {federated / pooled:.3f}",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run every seed and print (and optionally write) the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="config override KEY=VALUE"
    )
    parser.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    rows = []
    for seed in args.seeds:
        row = run_seed(seed, args.overrides)
        print(json.dumps(row), flush=True)
        rows.append(row)
    text = table(rows)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
