"""Cost of scoring contributions against the training they explain, in one run.

One simulated federation (generated images, 10 sites x 20 rounds by default,
one site trained on flipped labels) runs with ``[record] updates = true``;
then every site's Shapley and leave-one-out value is computed from the
record (``flmi contributions``: GTG-Shapley with truncation for more than 4
sites a round). Both are timed in the same process, on the same machine, one
after the other, and the script prints the ratio (goal: <= 0.25) and the
ranking, which should put the faulty site last.

Usage::

    .venv/bin/python benchmarks/contribution_cost.py [--sites 10] [--rounds 20] [--quick]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def tables(*, sites: int, rounds: int, patients: int) -> dict[str, object]:
    """The benchmark's config: generated 28x28 images, FedAvg, one label-flipped site."""
    return {
        "data": {"source": "synthetic", "image_size": 28, "n_patients": patients},
        "partition": {"method": "natural", "num_sites": sites, "min_examples_per_site": 5},
        "task": {"name": "classification", "num_classes": 2, "positive_label": 1, "width": 8},
        "strategy": {"name": "fedavg"},
        "federation": {
            "rounds": rounds,
            "local_epochs": 1,
            "lr": 0.05,
            "batch_size": 32,
            "seed": 0,
            "min_sites": 1,
        },
        "baselines": {"pooled": False, "local": False},
        "runtime": {"device": "cpu", "torch_threads": 1},
        "report": {"bootstrap_resamples": 0},
        "record": {"updates": True},
        "sites": {"hospital_1": {"fault": "label_flip"}},
    }


def main() -> None:
    """Run, score, print the table and one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--patients", type=int, default=6000, help="generated patients in all")
    parser.add_argument("--quick", action="store_true", help="4 sites x 3 rounds, 600 patients")
    parser.add_argument("--val-examples", type=int, default=0, help="0: every validation example")
    parser.add_argument("--between-eps", type=float, default=1e-3)
    parser.add_argument("--within-eps", type=float, default=1e-3)
    parser.add_argument("--max-permutations", type=int, default=0, help="0: 10 x sites")
    args = parser.parse_args()
    if args.quick:
        args.sites, args.rounds, args.patients = 4, 3, 600

    from flmi.config import config_from_dict
    from flmi.forensics.contribution import ContributionSettings
    from flmi.forensics.contributions_file import write_contributions
    from flmi.forensics.shapley import GtgSettings
    from flmi.simulation import run_experiment

    config = config_from_dict(tables(sites=args.sites, rounds=args.rounds, patients=args.patients))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        started = time.perf_counter()
        run_experiment(config=config, out=out)
        training_s = time.perf_counter() - started
        started = time.perf_counter()
        section = write_contributions(
            run_dir=out,
            max_examples=args.val_examples,
            settings=ContributionSettings(
                between_eps=args.between_eps,
                gtg=GtgSettings(within_eps=args.within_eps, max_permutations=args.max_permutations),
            ),
        )["contributions"]
        contributions_s = time.perf_counter() - started
        record_mb = sum(p.stat().st_size for p in (out / "record").rglob("*") if p.is_file())
    ratio = contributions_s / training_s
    print(f"{args.sites} sites x {args.rounds} rounds, {args.patients} generated patients")
    print(f"training run (record on):     {training_s:8.1f} s")
    print(f"contributions (from record):  {contributions_s:8.1f} s  ({ratio:.3f} x training)")
    print(
        f"coalitions scored: {section['coalitions_evaluated']}, rounds scored "
        f"{len(section['rounds_scored'])}, skipped {len(section['rounds_truncated'])}; "
        f"record {record_mb / 1e6:.1f} MB"
    )
    for rank, site in enumerate(section["ranking"], start=1):
        values = section["sites"][site]
        print(
            f"  {rank:>2}. {site:<12} Shapley {values['shapley']:+.4f}  "
            f"leave-one-out {values['leave_one_out']:+.4f}"
        )
    print(
        json.dumps(
            {
                "sites": args.sites,
                "rounds": args.rounds,
                "training_s": round(training_s, 2),
                "contributions_s": round(contributions_s, 2),
                "ratio": round(ratio, 4),
                "val_examples": section["val_examples"],
                "between_eps": args.between_eps,
                "within_eps": args.within_eps,
                "max_permutations": args.max_permutations,
                "coalitions": section["coalitions_evaluated"],
                "ranking": section["ranking"],
            }
        )
    )


if __name__ == "__main__":
    main()
