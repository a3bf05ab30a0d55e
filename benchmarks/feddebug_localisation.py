"""How often FedDebug's localisation ranks the faulty site first.

For every fault (flmi's fault injection: ``label_flip``, ``noise``, ``scale``),
number of sites and seed, one federation runs with ``[record] updates =
true`` and one faulty site (the second, third, fourth by seed); every recorded round is
then localised (``flmi debug``: 100 random inputs, no data) and counts as one
trial. A cell is the share of trials whose first-ranked site is the faulty
one.

Usage::

    .venv/bin/python benchmarks/feddebug_localisation.py [--data generated breastmnist]
        [--faults label_flip noise] [--sites 5 10] [--seeds 0 1 2] [--rounds 4]

Prints a Markdown table (the one in docs/forensics.md) and one JSON line per run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

BREASTMNIST = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "medmnist" / "breastmnist.npz"
)


def faulty_site(data: str, seed: int) -> str:
    """The faulty site of a run: a generated hospital, or a site of BreastMNIST's iid split."""
    return f"{'hospital' if data == 'generated' else 'site'}_{2 + seed}"


def tables(*, data: str, fault: str, sites: int, seed: int, rounds: int) -> dict[str, object]:
    """One evaluation run's config."""
    if data == "generated":
        source: dict[str, object] = {
            "source": "synthetic",
            "image_size": 16,
            "n_patients": 120 * sites,
        }
        partition: dict[str, object] = {"method": "natural", "num_sites": sites}
    else:
        source = {"source": "medmnist", "path": str(BREASTMNIST)}
        partition = {"method": "iid", "num_sites": sites}
    return {
        "data": source,
        "partition": {**partition, "min_examples_per_site": 10},
        "task": {"name": "classification", "num_classes": 2, "positive_label": 1, "width": 8},
        "strategy": {"name": "fedavg"},
        "federation": {
            "rounds": rounds,
            "local_epochs": 1,
            "lr": 0.05,
            "batch_size": 16,
            "seed": seed,
            "min_sites": 1,
        },
        "baselines": {"pooled": False, "local": False},
        "runtime": {"device": "cpu", "torch_threads": 1},
        "report": {"bootstrap_resamples": 0},
        "record": {"updates": True},
        "sites": {faulty_site(data, seed): {"fault": fault}},
    }


def run_cell(*, data: str, fault: str, sites: int, seed: int, rounds: int) -> list[bool]:
    """Whether the faulty site was ranked first, one entry per recorded round."""
    from flmi.config import config_from_dict
    from flmi.forensics.debug_run import debug_round
    from flmi.forensics.feddebug import DebugSettings
    from flmi.simulation import run_experiment

    config = config_from_dict(tables(data=data, fault=fault, sites=sites, seed=seed, rounds=rounds))
    faulty = faulty_site(data, seed)
    hits = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        run_experiment(config=config, out=out)
        for rnd in range(1, rounds + 1):
            _, ranking = debug_round(out, rnd=rnd, settings=DebugSettings())
            hits.append(ranking[0][0] == faulty)
    return hits


def main() -> None:
    """Run every cell and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        nargs="+",
        default=["generated"],
        choices=["generated", "breastmnist"],
    )
    parser.add_argument("--faults", nargs="+", default=["label_flip", "noise"])
    parser.add_argument("--sites", nargs="+", type=int, default=[5, 10])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    rows = []
    for data in args.data:
        for fault in args.faults:
            for sites in args.sites:
                hits: list[bool] = []
                for seed in args.seeds:
                    got = run_cell(
                        data=data, fault=fault, sites=sites, seed=seed, rounds=args.rounds
                    )
                    hits += got
                    print(
                        json.dumps(
                            {
                                "data": data,
                                "fault": fault,
                                "sites": sites,
                                "seed": seed,
                                "first": got,
                            }
                        ),
                        flush=True,
                    )
                rows.append((data, fault, sites, sum(hits), len(hits)))
    print("| data set | fault | sites | faulty site ranked first |")
    print("| --- | --- | --- | --- |")
    for data, fault, sites, hit, total in rows:
        print(f"| {data} | {fault} | {sites} | {hit}/{total} ({100 * hit / total:.0f} %) |")


if __name__ == "__main__":
    main()
