"""Compressed updates on BreastMNIST: uplink bytes against the final AUC.

BreastMNIST (``examples/breastmnist.toml``: 4 sites, Dirichlet alpha 0.5,
FedAvg) is trained once uncompressed and once per ``[compression]`` setting:
8-bit and 4-bit quantisation, top-k 1 % with error feedback and PowerSGD
rank 4. Each row gives the total uplink bytes over the run, the ratio to the
uncompressed run's, and the final central test AUC (mean +- sd over seeds).

Usage::

    .venv/bin/python benchmarks/communication.py --seeds 0 1 2 --rounds 60 \\
        --out runs/bench/communication.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from flmi.config import load_config
from flmi.simulation import run_experiment

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "breastmnist.toml"

ROWS: list[tuple[str, list[str]]] = [
    ("uncompressed", []),
    ("quantize 8-bit", ["compression.method='quantize'", "compression.bits=8"]),
    ("quantize 4-bit", ["compression.method='quantize'", "compression.bits=4"]),
    ("top-k 1 % + EF", ["compression.method='topk'", "compression.fraction=0.01"]),
    ("PowerSGD rank 4", ["compression.method='powersgd'", "compression.rank=4"]),
]


def _run(overrides: list[str], *, seed: int, rounds: int, width: int) -> dict[str, float]:
    base = [
        f"federation.rounds={rounds}",
        f"federation.seed={seed}",
        f"task.width={width}",
        "baselines.pooled=false",
        "baselines.local=false",
        "runtime.device='cpu'",
    ]
    config = load_config(EXAMPLE, overrides=base + overrides)
    with tempfile.TemporaryDirectory() as tmp:
        run_experiment(config=config, out=Path(tmp) / "run")
        lines = [
            json.loads(line)
            for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()
        ]
    federated = [line for line in lines if line["arm"] == "federated"]
    return {
        "bytes_up": float(sum(line["bytes_up"] for line in federated)),
        "auc": float(federated[-1]["global"]["auc"]),
    }


def _cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} +- {statistics.stdev(values):.3f}"


def main(argv: list[str] | None = None) -> int:
    """Run every row for every seed and write the markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    results: dict[str, list[dict[str, Any]]] = {}
    for name, overrides in ROWS:
        for seed in args.seeds:
            result = _run(overrides, seed=seed, rounds=args.rounds, width=args.width)
            print(name, seed, result, file=sys.stderr, flush=True)
            results.setdefault(name, []).append(result)
    full = statistics.mean(r["bytes_up"] for r in results["uncompressed"])
    lines = [
        f"BreastMNIST, 4 Dirichlet sites, FedAvg, {args.rounds} rounds, width {args.width}, "
        f"seeds {' '.join(map(str, args.seeds))}",
        "",
        "| setting | uplink MB | fewer bytes | final AUC |",
        "|---|---:|---:|---:|",
    ]
    for name, rows in results.items():
        up = statistics.mean(r["bytes_up"] for r in rows)
        auc = _cell([r["auc"] for r in rows])
        lines.append(f"| {name} | {up / 1e6:.2f} | {full / up:.1f}x | {auc} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
