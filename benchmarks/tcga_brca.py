"""Fed-TCGA-BRCA with FLamby's protocol: FedAvg, FedProx, FedAdam, pooled and local, seeds 0-4.

Runs ``examples/tcga_brca/{fedavg,fedprox,fedadam}.toml`` in-process (FLamby's
split is fixed, so seeds vary the initial weights and batch order only) and
prints, per algorithm, the C-index as mean +- sd over the seeds next to
FLamby's published means (Ogier du Terrail et al., NeurIPS 2022), and the ratio
to the pooled arm measured in the same run. Two C-indices are reported:

- ``per-region``: the unweighted mean of the 6 regions' test C-indices
  (FLamby's figure averages the local test sets); a region whose test split
  has no comparable pair is left out of that mean;
- ``central``: the C-index on the 222 test patients together.

The pooled and local rows come from the FedAvg file's baselines (pooled:
FLamby's centralised recipe, Adam lr 0.1, batch 8, 30 epochs; local: each
region alone with FedAvg's client settings and budget).

Usage::

    .venv/bin/python benchmarks/tcga_brca.py [--seeds 0 1 2 3 4] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

from flmi.config import load_config
from flmi.simulation import run_experiment

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "tcga_brca"
FLAMBY = {"pooled": 0.676, "fedavg": 0.732, "fedadam": 0.815}
ROWS = ("pooled", "local", "fedavg", "fedprox", "fedadam")


def mean_region_c_index(per_site: Mapping[str, Mapping[str, float]]) -> float:
    """Unweighted mean of the regions' test C-indices, leaving out undefined ones."""
    values = [m["c_index"] for m in per_site.values() if not math.isnan(m["c_index"])]
    return statistics.fmean(values) if values else float("nan")


def run(name: str, seed: int, *, baselines: bool) -> dict[str, tuple[float, float]]:
    """One example config at one seed: ``{arm: (per-region mean, central)}``."""
    flag = "true" if baselines else "false"
    config = load_config(
        EXAMPLES / f"{name}.toml",
        overrides=[
            f"federation.seed={seed}",
            f"baselines.pooled={flag}",
            f"baselines.local={flag}",
            "report.bootstrap_resamples=0",
        ],
    )
    result = run_experiment(config=config, out=None)
    out: dict[str, tuple[float, float]] = {}
    for arm, r in result.arms.items():
        central = (r.global_metrics or {}).get("c_index", float("nan"))
        out[arm] = (mean_region_c_index(r.per_site), central)
    return out


def _stats(values: Sequence[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args()
    scores: dict[str, list[tuple[float, float]]] = {}
    for name in ("fedavg", "fedprox", "fedadam"):
        for seed in args.seeds:
            arms = run(name, seed, baselines=name == "fedavg")
            scores.setdefault(name, []).append(arms["federated"])
            for baseline in ("pooled", "local"):
                if baseline in arms:
                    scores.setdefault(baseline, []).append(arms[baseline])
            print(f"  {name} seed {seed}: {arms}", flush=True)
    pooled, _ = _stats([s[0] for s in scores["pooled"]])
    lines = [
        f"Fed-TCGA-BRCA, FLamby protocol, test C-index, seeds {args.seeds}",
        "",
        "| algorithm | per-region mean +- sd | central mean +- sd | FLamby mean | "
        "flmi / flmi pooled |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in ROWS:
        region = _stats([s[0] for s in scores[name]])
        central = _stats([s[1] for s in scores[name]])
        flamby = f"{FLAMBY[name]:.3f}" if name in FLAMBY else "-"
        lines.append(
            f"| {name} | {region[0]:.3f} +- {region[1]:.3f} | {central[0]:.3f} +- {central[1]:.3f} "
            f"| {flamby} | {region[0] / pooled:.3f} |"
        )
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
