"""Semi-supervised sites on BreastMNIST: do 2 unlabeled hospitals help 2 labeled ones?

Runs a config of 4 hospitals where hospitals 3 and 4 have no training label
(``--config``; by default ``examples/breastmnist_semi_supervised_few_labels.toml``,
where hospitals 1 and 2 also have few labels;
``examples/breastmnist_semi_supervised_scanners.toml`` is the same with a scanner
per hospital; ``examples/breastmnist_semi_supervised.toml`` is the earlier
protocol with 136 labels each) in three arms, each over the seeds:

- ``semi-supervised``: all 4 hospitals; the unlabeled ones train with FixMatch
  (or ``--method pseudo_label``);
- ``labeled only``: the same config with ``federation.semi_supervised =
  "none"``, so the unlabeled hospitals sit out: a federation of the 2 labeled
  hospitals alone, with the same rounds, local epochs and settings;
- ``all labeled`` (reference): the same 4 hospitals with every label kept.

It prints the central test AUC (and balanced accuracy) of the final round as
mean +- sd over the seeds, each seed's AUC, the ratio of the semi-supervised
AUC to the labeled-only AUC, and the ratio of the all-labeled AUC to the
labeled-only AUC (how much labels for hospitals 3 and 4 would be worth: the
room there is for unlabeled images to fill), all measured in the same run.
Beside them: each arm's AUC on the labeled and on the unlabeled hospitals'
test images, and the per-seed paired differences semi-supervised minus
labeled only (mean, sd, paired t, seeds better), overall and on the
unlabeled hospitals' images.

With ``--tune``, settings of the semi-supervised arm are chosen first on
validation data only (the final model's AUC on every hospital's validation
split together, averaged over the tuning seeds);
test data is never looked at to choose anything. The grid is every
combination of the ``--grid KEY=V1,V2,...`` options (by default the
pseudo-label threshold and ``federation.unlabeled_weight``).

Usage::

    nice .venv/bin/python benchmarks/semi_supervised.py [--config FILE.toml] [--seeds 0 1 2]
        [--tune [--tune-only] [--grid KEY=V1,V2 ...]] [--set KEY=VALUE ...] [--out FILE.md]
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

import torch

from flmi.config import Config, load_config
from flmi.core.params import Params
from flmi.data.arrays import concat_splits
from flmi.data.sources import load_data
from flmi.simulation import run_experiment
from flmi.tasks.registry import build_task
from flmi.tasks.torch_params import load_params

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "breastmnist_semi_supervised_few_labels.toml"
DEFAULT_GRID = (
    "federation.pseudo_label_threshold=0.9,0.95",
    "federation.unlabeled_weight=0.5,1.0",
)


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
#: The config every arm starts from (``--config``).
CHOSEN: list[Path] = [CONFIG]


def pooled_val(config: Config, params: Params) -> dict[str, float]:
    """AUC and balanced accuracy of ``params`` on every hospital's validation split together.

    The same 78 images for every arm, labeled hospitals or not (an arm's own
    round records score only the hospitals that took part). Balanced accuracy
    shows a model that calls every image benign, which AUC does not.
    """
    data = load_data(config)
    task = build_task(config, data)
    model = task.build_model(seed=0)
    load_params(model, params, where="benchmark validation")
    val = concat_splits([data.sites[s].val for s in sorted(data.sites)])
    metrics = task.evaluate(model=model, data=val, device=torch.device("cpu"))
    return {"auc": float(metrics["auc"]), "balanced_accuracy": float(metrics["balanced_accuracy"])}


def test_by_hospital_group(config: Config, params: Params) -> dict[str, float]:
    """Test AUC of ``params`` on the labeled hospitals' and on the unlabeled hospitals' test splits.

    The groups are those of the study's config (``--config`` with ``--set``),
    whatever the arm, so every arm is scored on the same images. With
    ``partition.scanner_shift`` this tells whether a gain comes from the
    hospitals whose scanner the labeled hospitals never saw.
    """
    study = load_config(CHOSEN[0], overrides=[f"federation.seed={config.federation.seed}", *EXTRA])
    unlabeled = sorted(n for n, s in study.sites.items() if not s.labeled)
    data = load_data(config)
    labeled = sorted(n for n in data.sites if n not in unlabeled)
    task = build_task(config, data)
    model = task.build_model(seed=0)
    load_params(model, params, where="benchmark test by hospital group")
    out: dict[str, float] = {}
    for group, names in (("labeled", labeled), ("unlabeled", unlabeled)):
        if names:
            test = concat_splits([data.sites[s].test for s in names])
            metrics = task.evaluate(model=model, data=test, device=torch.device("cpu"))
            out[f"test_auc_{group}_hospitals"] = float(metrics["auc"])
    return out


def run(seed: int, overrides: Sequence[str]) -> dict[str, float]:
    """One run: central test AUC and balanced accuracy, validation AUC, wall time."""
    config = load_config(CHOSEN[0], overrides=[f"federation.seed={seed}", *EXTRA, *overrides])
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
        **{f"pooled_val_{k}": v for k, v in pooled_val(config, result.params).items()},
        **test_by_hospital_group(config, result.params),
        "wall_s": time.perf_counter() - started,
    }


def parse_grid(options: Sequence[str]) -> list[tuple[str, ...]]:
    """Every combination of ``KEY=V1,V2,...`` options, as tuples of ``KEY=V`` overrides."""
    axes: list[list[str]] = []
    for option in options:
        key, sep, values = option.partition("=")
        if not sep or not values:
            raise SystemExit(f"--grid {option!r}: write KEY=V1,V2,...")
        axes.append([f"{key}={v}" for v in values.split(",")])
    return list(itertools.product(*axes))


def tune(seeds: Sequence[int], method: str, grid: Sequence[tuple[str, ...]]) -> tuple[str, ...]:
    """The grid point with the best mean validation AUC over ``seeds``."""
    scores: dict[tuple[str, ...], float] = {}
    for point in grid:
        rows = [run(seed, [f"federation.semi_supervised={method}", *point]) for seed in seeds]
        score = scores[point] = statistics.fmean(r["pooled_val_auc"] for r in rows)
        balanced = statistics.fmean(r["pooled_val_balanced_accuracy"] for r in rows)
        print(
            f"  tune {' '.join(point)}: val AUC {score:.4f}, val balanced accuracy {balanced:.3f}",
            flush=True,
        )
    return max(sorted(scores), key=lambda k: scores[k])


def paired_line(semi: Sequence[float], labeled: Sequence[float]) -> str:
    """Per-seed differences semi-supervised minus labeled only, their mean, sd and paired t.

    Both arms of a seed share the partition, so the paired difference is what
    the unlabeled hospitals changed; the spread between seeds cancels from it.
    """
    diffs = [a - b for a, b in zip(semi, labeled, strict=True)]
    mean = statistics.fmean(diffs)
    text = ", ".join(f"{d:+.3f}" for d in diffs)
    if len(diffs) < 2:
        return f"paired difference semi-supervised - labeled only (test AUC): {text}"
    sd = statistics.stdev(diffs)
    t = mean / (sd / len(diffs) ** 0.5) if sd > 0 else float("inf")
    better = sum(d > 0 for d in diffs)
    return (
        f"paired differences semi-supervised - labeled only (test AUC), per seed: {text}; "
        f"mean {mean:+.3f}, sd {sd:.3f}, paired t {t:.2f} on {len(diffs) - 1} degrees of "
        f"freedom; better in {better} of {len(diffs)} seeds"
    )


def _mean_sd(values: Sequence[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {sd:.3f}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--method", choices=["fixmatch", "pseudo_label"], default="fixmatch")
    parser.add_argument("--config", type=Path, default=CONFIG, help="the config of every arm")
    parser.add_argument("--tune", action="store_true", help="choose --grid settings on val")
    parser.add_argument("--tune-seeds", type=int, nargs="+", default=[10])
    parser.add_argument(
        "--tune-only",
        action="store_true",
        help="stop after --tune: score the grid on validation, never touch the test split",
    )
    parser.add_argument(
        "--grid", action="append", default=[], metavar="KEY=V1,V2", help="a tuning axis"
    )
    parser.add_argument(
        "--arms",
        nargs="+",
        choices=["semi", "labeled", "reference"],
        default=["semi", "labeled", "reference"],
        help="run only these arms (the table and ratios need all three)",
    )
    parser.add_argument("--out", type=Path, help="also write the table as Markdown here")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override for every arm"
    )
    args = parser.parse_args(argv)
    EXTRA.extend(args.set)
    CHOSEN[0] = args.config

    base = load_config(args.config, overrides=EXTRA)
    chosen: tuple[str, ...] = ()
    if args.tune:
        print(f"tuning on validation AUC, seeds {args.tune_seeds}", flush=True)
        chosen = tune(args.tune_seeds, args.method, parse_grid(args.grid or DEFAULT_GRID))
        if args.tune_only:
            print(f"best on validation: {' '.join(chosen)}")
            return
    ssl = load_config(
        args.config, overrides=[*EXTRA, f"federation.semi_supervised={args.method}", *chosen]
    ).federation
    label = (
        f"semi-supervised ({args.method}, threshold {ssl.pseudo_label_threshold}, "
        f"unlabeled_weight {ssl.unlabeled_weight}, teacher {ssl.pseudo_label_teacher}, "
        f"alignment {'on' if ssl.distribution_alignment else 'off'}"
        + (
            f", class quota {ssl.pseudo_label_quota}"
            if ssl.pseudo_label_selection == "class_quota"
            else ""
        )
        + (", soft targets" if ssl.soft_pseudo_labels else "")
        + (f"; tuned {' '.join(chosen)}" if chosen else "")
        + ")"
    )
    arms = {
        label: [f"federation.semi_supervised={args.method}", *chosen],
        "labeled only (2 labeled hospitals)": ["federation.semi_supervised=none"],
        "all labeled (reference)": [
            *all_labeled(base.federation.lr),
            "federation.semi_supervised=none",
        ],
    }
    keys = dict(zip(arms, ["semi", "labeled", "reference"], strict=True))
    results: dict[str, list[dict[str, float]]] = {}
    for name, overrides in arms.items():
        if keys[name] not in args.arms:
            continue
        results[name] = []
        for seed in args.seeds:
            row = run(seed, overrides)
            results[name].append(row)
            groups = "".join(
                f", {key.removeprefix('test_auc_').replace('_', ' ')} {value:.4f}"
                for key, value in row.items()
                if key.startswith("test_auc_")
            )
            print(
                f"  {name} seed {seed}: test AUC {row['auc']:.4f}{groups}, "
                f"val AUC {row['pooled_val_auc']:.4f}, val balanced accuracy "
                f"{row['pooled_val_balanced_accuracy']:.3f} ({row['wall_s']:.0f} s)",
                flush=True,
            )
    if len(results) < len(arms):
        return
    ssl_name, labeled_name, reference_name = list(arms)
    aucs = {name: [r["auc"] for r in rows] for name, rows in results.items()}
    ratio = statistics.fmean(aucs[ssl_name]) / statistics.fmean(aucs[labeled_name])
    headroom = statistics.fmean(aucs[reference_name]) / statistics.fmean(aucs[labeled_name])
    f = base.federation
    budget = f"{f.local_steps} local steps" if f.local_steps else f"{f.local_epochs} local epoch(s)"
    lines = [
        f"BreastMNIST, 4 hospitals ({base.partition.method}), hospitals 3 and 4 without labels "
        f"({args.config.name}); {f.rounds} rounds of {base.strategy.name}, {budget} a round; "
        f"seeds {args.seeds}",
        "",
        "| arm | central test AUC | per seed | test AUC, labeled hospitals' images | "
        "test AUC, unlabeled hospitals' images | central test balanced accuracy | mean wall s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, rows in results.items():
        per_seed = ", ".join(f"{r['auc']:.3f}" for r in rows)
        lines.append(
            f"| {name} | {_mean_sd([r['auc'] for r in rows])} | {per_seed} | "
            f"{_mean_sd([r['test_auc_labeled_hospitals'] for r in rows])} | "
            f"{_mean_sd([r['test_auc_unlabeled_hospitals'] for r in rows])} | "
            f"{_mean_sd([r['balanced_accuracy'] for r in rows])} | "
            f"{statistics.fmean(r['wall_s'] for r in rows):.0f} |"
        )
    lines += [
        "",
        paired_line(aucs[ssl_name], aucs[labeled_name]),
        "on the unlabeled hospitals' test images: "
        + paired_line(
            [r["test_auc_unlabeled_hospitals"] for r in results[ssl_name]],
            [r["test_auc_unlabeled_hospitals"] for r in results[labeled_name]],
        ),
        f"ratio semi-supervised / labeled only (test AUC): {ratio:.3f}",
        f"ratio all labeled / labeled only (test AUC, the room for unlabeled images): "
        f"{headroom:.3f}",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
