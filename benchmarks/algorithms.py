"""Every strategy on three data sets, and a robustness table under faulty sites.

Two tables, one markdown file each:

* **algorithms** (default): strategy x data set, each cell the final-round
  test metric as mean +- sd over seeds, with ``pooled`` and ``local`` rows
  taken from the FedAvg runs' baseline arms. Data sets:

  - ``demo``: the generated scanner-shift hospitals (``flmi/examples/demo.toml``,
    4 sites); metric: AUC on the central test set.
  - ``breastmnist``: BreastMNIST (``examples/breastmnist.toml``) over 5 sites
    with Dirichlet alpha 0.3; metric: AUC on the central test set.
  - ``breastmnist4``: BreastMNIST with the example config's own partition
    (4 sites, Dirichlet alpha 0.5); metric: AUC on the central test set.
  - ``heart``: Fed-Heart-Disease with FLamby's protocol
    (``examples/heart_disease/<strategy>.toml`` where one exists, otherwise
    ``fedavg.toml`` with the strategy's name set); metric: the unweighted mean
    of the four hospitals' test accuracies, as in ``benchmarks/heart_disease.py``.

* **robustness** (``--robustness``): BreastMNIST over 5 sites as above; the
  largest site (most training examples) sends its update scaled by 10
  (``fault = "scale"``), or Gaussian noise around the global model
  (``fault = "noise"``), and FedAvg, median and trimmed mean (one vote per
  site, and example-weighted with each site's share capped at 0.3), Krum and
  Multi-Krum (f = 1) are compared with the clean run. ``--robust-rows`` runs a
  subset of the rows.

Every run appends one JSON line to ``--results`` (when given); a later call with
the same file skips the runs it already holds, and ``--table-only`` rebuilds a
table from the file without training. Run one invocation at a time.

Usage::

    .venv/bin/python benchmarks/algorithms.py --datasets heart --seeds 0 1 2 \\
        --results runs/bench/algorithms.jsonl --out runs/bench/algorithms.md
    .venv/bin/python benchmarks/algorithms.py --datasets demo breastmnist --rounds 20 \\
        --local-seeds 0 --results runs/bench/algorithms.jsonl --out runs/bench/algorithms.md
    .venv/bin/python benchmarks/algorithms.py --robustness --seeds 0 \\
        --results runs/bench/robustness.jsonl --out runs/bench/robustness.md
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flmi.config import Config, load_config
from flmi.data.sources import load_data
from flmi.report.summary import ArmResult
from flmi.simulation import run_experiment

ROOT = Path(__file__).resolve().parents[1]
HEART = ROOT / "examples" / "heart_disease"

ALGORITHMS = (
    "fedavg",
    "fedprox",
    "scaffold",
    "feddyn",
    "moon",
    "fedavgm",
    "fedadam",
    "fedyogi",
    "fedadagrad",
    "fednova",
    "median",
    "trimmed_mean",
    "krum",
    "geometric_median",
    "cyclic",
)
ROBUST_STRATEGIES = (
    "fedavg",
    "median",
    "median_weighted",
    "trimmed_mean",
    "trimmed_mean_weighted",
    "krum",
    "multi_krum",
)
# The example-weighted rows' cap on one site's share of the vote (the strategies' default).
ROBUST_MAX_WEIGHT_SHARE = 0.3
# Robustness rows that are a strategy with options: row name -> (strategy, overrides).
ROBUST_VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    # "median" and "trimmed_mean" keep their row names from before the weighted rules
    # existed (one vote per site), so results files made then still count.
    "median": ("median", ('strategy.weighting="uniform"',)),
    "median_weighted": (
        "median",
        ('strategy.weighting="examples"', f"strategy.max_weight_share={ROBUST_MAX_WEIGHT_SHARE}"),
    ),
    "trimmed_mean": ("trimmed_mean", ('strategy.weighting="uniform"',)),
    "trimmed_mean_weighted": (
        "trimmed_mean",
        ('strategy.weighting="examples"', f"strategy.max_weight_share={ROBUST_MAX_WEIGHT_SHARE}"),
    ),
    "krum": ("krum", ("strategy.num_byzantine=1",)),
    # Multi-Krum: average the 3 updates with the best Krum scores (n - f - 1 with f = 1).
    "multi_krum": ("krum", ("strategy.num_byzantine=1", "strategy.num_selected=3")),
}
# How the robustness table names its rows.
ROBUST_LABELS = {
    "median": "median, uniform",
    "median_weighted": "median, example-weighted",
    "trimmed_mean": "trimmed_mean, uniform",
    "trimmed_mean_weighted": "trimmed_mean, example-weighted",
}
CONDITIONS = ("clean", "scale", "noise")
# Robustness reference row: FedAvg with the faulty site left out of every round.
ABSENT_ROW = "fedavg_without_faulty_site"
CONDITION_LABELS = {"clean": "clean", "scale": "scale x10", "noise": "noise"}

# Strategies that assume plain local SGD steps: on the image data sets (whose
# configs train locally with Adam) they run with SGD, lr 0.01, no momentum.
PLAIN_SGD = ("scaffold", "fednova")
IMAGE_SGD = ("federation.optimizer=sgd", "federation.momentum=0.0", "federation.lr=0.01")

# The BreastMNIST partition of both tables: seeds 0, 1 and 2 all leave every
# site at least 5 training examples (seed 1's smallest site holds 6).
BREAST_PARTITION = (
    "partition.num_sites=5",
    "partition.alpha=0.3",
    "partition.min_examples_per_site=5",
)

# Robustness on an IID partition: 5 sites of (nearly) equal size and label mix, so a
# robust rule that ignores the faulty site loses a fifth of the data, not half of a class.
IID_PARTITION = ("partition.num_sites=5", "partition.method=iid")

# Robustness: the faulty site's update is multiplied by this factor ...
FAULT_SCALE = 10.0
# ... or replaced by the global model plus N(0, std^2) noise (the framework's default std).
DEFAULT_NOISE_STD = 1.0

# Robustness table: the thresholds the issue states, in AUC.
COLLAPSE_DROP = 0.10
ROBUST_TOLERANCE = 0.03

Metric = Callable[[ArmResult], float]


def central_auc(arm: ArmResult) -> float:
    """AUC on the central test set (simulation only).

    Parameters
    ----------
    arm
        One arm's final-round metrics.

    Returns
    -------
    float
        The AUC, or NaN when the arm has no central metrics.
    """
    if arm.global_metrics is None:
        return math.nan
    return float(arm.global_metrics.get("auc", math.nan))


def mean_site_accuracy(arm: ArmResult) -> float:
    """FLamby's metric: the unweighted mean of the sites' own test accuracies.

    Parameters
    ----------
    arm
        One arm's final-round metrics.

    Returns
    -------
    float
        The mean accuracy over sites (NaN when there are none).
    """
    values = [float(m.get("accuracy", math.nan)) for m in arm.per_site.values()]
    return statistics.fmean(values) if values else math.nan


@dataclass(frozen=True)
class Dataset:
    """One column of the algorithms table.

    Parameters
    ----------
    name
        Key used on the command line and in the results file.
    title
        Column heading.
    metric_name
        What the cells hold, for the table notes.
    metric
        Final-round metric of one arm.
    num_sites
        Sites of the federation (sets Krum's ``num_byzantine``).
    image
        Whether the config trains a CNN locally with Adam (so SCAFFOLD and
        FedNova switch to plain SGD).
    config
        Config file of the FedAvg run.
    overrides
        ``--set`` overrides applied to every run of this data set.
    per_strategy_dir
        A folder holding ``<strategy>.toml`` files to prefer over ``config``.
    """

    name: str
    title: str
    metric_name: str
    metric: Metric
    num_sites: int
    image: bool
    config: Path
    overrides: tuple[str, ...] = ()
    per_strategy_dir: Path | None = None

    def config_for(self, algorithm: str) -> tuple[Path, list[str]]:
        """The config file and the overrides that select ``algorithm``.

        Parameters
        ----------
        algorithm
            A strategy name.

        Returns
        -------
        tuple of Path and list of str
            The file to load and the ``--set`` overrides (without seed, rounds
            or baselines).
        """
        if self.per_strategy_dir is not None:
            own = self.per_strategy_dir / f"{algorithm}.toml"
            if own.is_file():
                return own, list(self.overrides)
        overrides = [*self.overrides, f"strategy.name={algorithm}"]
        if algorithm == "krum":
            byzantine = max(0, (self.num_sites - 3) // 2)  # Krum needs n > 2f + 2
            overrides += [
                f"strategy.num_byzantine={byzantine}",
                f"federation.min_sites={2 * byzantine + 3}",
            ]
        elif algorithm == "cyclic":
            overrides.append("federation.min_sites=1")
        elif algorithm in ("median", "trimmed_mean"):
            # Table 1 was made with one vote per site, before example weighting existed.
            overrides.append('strategy.weighting="uniform"')
        elif algorithm == "geometric_median":
            # Table 1 was made with uncapped example weights, before the cap existed.
            overrides.append("strategy.max_weight_share=1.0")
        if self.image and algorithm in PLAIN_SGD:
            overrides += list(IMAGE_SGD)
        return self.config, overrides


DATASETS: dict[str, Dataset] = {
    "demo": Dataset(
        name="demo",
        title="generated hospitals (4 sites)",
        metric_name="central test AUC",
        metric=central_auc,
        num_sites=4,
        image=True,
        config=ROOT / "flmi" / "examples" / "demo.toml",
    ),
    "breastmnist": Dataset(
        name="breastmnist",
        title="BreastMNIST, Dirichlet 0.3, 5 sites",
        metric_name="central test AUC",
        metric=central_auc,
        num_sites=5,
        image=True,
        config=ROOT / "examples" / "breastmnist.toml",
        overrides=BREAST_PARTITION,
    ),
    "breastmnist4": Dataset(
        name="breastmnist4",
        title="BreastMNIST, Dirichlet 0.5, 4 sites",
        metric_name="central test AUC",
        metric=central_auc,
        num_sites=4,
        image=True,
        config=ROOT / "examples" / "breastmnist.toml",
    ),
    "heart": Dataset(
        name="heart",
        title="Fed-Heart-Disease (4 hospitals)",
        metric_name="mean per-hospital test accuracy",
        metric=mean_site_accuracy,
        num_sites=4,
        image=False,
        config=HEART / "fedavg.toml",
        per_strategy_dir=HEART,
    ),
}


@dataclass
class Outcome:
    """One finished (or failed) run.

    Parameters
    ----------
    key
        What identifies the run in the results file.
    arms
        Final-round metric per arm.
    wall_s
        Wall time of the whole run (every arm), seconds.
    arm_wall_s
        Training-and-evaluation time per arm, summed over rounds.
    curve
        The federated arm's metric at every evaluated round.
    rounds
        Rounds the federation ran.
    overrides
        Every ``--set`` override the run used.
    error
        The exception's message when the run failed.
    extra
        Anything else worth keeping (the faulty site, its size).
    """

    key: dict[str, Any]
    arms: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    arm_wall_s: dict[str, float] = field(default_factory=dict)
    curve: list[float | None] = field(default_factory=list)
    rounds: int = 0
    overrides: list[str] = field(default_factory=list)
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The results-file line (NaN written as ``null``)."""
        return {
            **self.key,
            "arms": {k: (None if math.isnan(v) else v) for k, v in self.arms.items()},
            "wall_s": round(self.wall_s, 3),
            "arm_wall_s": {k: round(v, 3) for k, v in self.arm_wall_s.items()},
            "rounds": self.rounds,
            "curve": self.curve,
            "overrides": self.overrides,
            "error": self.error,
            **self.extra,
        }


def _read_history(run_dir: Path, metric: Metric) -> tuple[dict[str, float], list[float | None]]:
    """Seconds per arm (summed over rounds) and the federated arm's metric per round.

    Parameters
    ----------
    run_dir
        A finished run directory (its ``metrics.jsonl``).
    metric
        The metric of the table.

    Returns
    -------
    tuple of dict and list
        ``{arm: seconds}`` and the federated arm's metric at every evaluated
        round (``None`` where it is NaN).
    """
    walls: dict[str, float] = {}
    curve: list[float | None] = []
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        return walls, curve
    for line in metrics.read_text().splitlines():
        row = json.loads(line)
        walls[row["arm"]] = walls.get(row["arm"], 0.0) + float(row.get("wall_s") or 0.0)
        if row["arm"] == "federated":
            arm = ArmResult(
                global_metrics=_nan_metrics(row.get("global")),
                per_site={s: _nan_metrics(m) or {} for s, m in row["per_site"].items()},
                site_mean=_nan_metrics(row.get("site_mean")) or {},
            )
            value = metric(arm)
            curve.append(None if math.isnan(value) else round(value, 6))
    return walls, curve


def _nan_metrics(metrics: dict[str, float | None] | None) -> dict[str, float] | None:
    """A ``metrics.jsonl`` metrics object with ``null`` read back as NaN."""
    if metrics is None:
        return None
    return {k: math.nan if v is None else float(v) for k, v in metrics.items()}


def run_one(
    *, key: dict[str, Any], config_path: Path, overrides: list[str], metric: Metric
) -> Outcome:
    """Run one config in a temporary folder and keep its final-round metrics.

    A run that raises is recorded with its error, so one failure does not end
    the benchmark.

    Parameters
    ----------
    key
        What identifies the run.
    config_path
        The TOML config.
    overrides
        ``--set``-style overrides.
    metric
        The metric of each arm.

    Returns
    -------
    Outcome
        Metrics per arm and wall times, or the error.
    """
    outcome = Outcome(key=key, overrides=list(overrides))
    started = time.perf_counter()
    try:
        config = load_config(config_path, overrides=overrides)
        outcome.rounds = config.federation.rounds
        with tempfile.TemporaryDirectory() as tmp:
            result = run_experiment(config=config, out=Path(tmp) / "run")
            outcome.arm_wall_s, outcome.curve = _read_history(Path(tmp) / "run", metric)
        outcome.arms = {arm: metric(r) for arm, r in result.arms.items()}
    except Exception as exc:  # recorded and reported; the table goes on
        outcome.error = f"{type(exc).__name__}: {exc}"
        traceback.print_exc(file=sys.stderr)
    outcome.wall_s = time.perf_counter() - started
    return outcome


class Results:
    """The runs of one table, kept in memory and appended to a JSON-lines file.

    Parameters
    ----------
    path
        The results file, or ``None`` to keep nothing on disk.
    """

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self.rows: list[dict[str, Any]] = []
        if path is not None and path.is_file():
            self.rows = [json.loads(line) for line in path.read_text().splitlines() if line]

    def find(self, key: dict[str, Any]) -> dict[str, Any] | None:
        """The last successful row whose fields match ``key``, if any."""
        matches = [
            row
            for row in self.rows
            if row.get("error") is None and all(row.get(k) == v for k, v in key.items())
        ]
        return matches[-1] if matches else None

    def add(self, outcome: Outcome) -> dict[str, Any]:
        """Record ``outcome`` and append it to the file."""
        row = outcome.to_json()
        self.rows.append(row)
        if self._path is not None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            with self._path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(row, sort_keys=True) + "\n")
        return row


def _fmt(value: float | None) -> str:
    return "nan" if value is None or math.isnan(value) else f"{value:.3f}"


def _mean_sd(values: Sequence[float | None]) -> tuple[float, float, int]:
    """Mean, sample sd and count of the finite values (NaN mean when none)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return math.nan, math.nan, 0
    sd = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return statistics.fmean(finite), sd, len(finite)


def _cell(values: Sequence[float | None]) -> str:
    """``mean +- sd`` over seeds, with ``(n=k)`` when fewer than 3 seeds or some failed."""
    if not values:
        return "-"
    mean, sd, n = _mean_sd(values)
    if n == 0:
        return "nan"
    text = f"{mean:.3f}" if n == 1 else f"{mean:.3f} +- {sd:.3f}"
    if n < 3 or n < len(values):
        text += f" (n={n}" + (f" of {len(values)}" if n < len(values) else "") + ")"
    return text


def _rounds_text(rows: Iterable[dict[str, Any]]) -> str:
    rounds = sorted({int(r["rounds"]) for r in rows if r.get("rounds")})
    return "/".join(str(r) for r in rounds) or "?"


# ---------------------------------------------------------------- algorithms table


def run_algorithms(
    *,
    datasets: Sequence[str],
    algorithms: Sequence[str],
    seeds: Sequence[int],
    rounds: int | None,
    local_seeds: Sequence[int] | None,
    results: Results,
) -> None:
    """Run every (data set, algorithm, seed) not already in ``results``.

    The FedAvg run of each seed also trains the pooled arm, and the local arm
    for the seeds in ``local_seeds`` (all seeds when ``None``).

    Parameters
    ----------
    datasets, algorithms, seeds
        What to run.
    rounds
        ``federation.rounds`` for every run, or ``None`` for the configs' own.
    local_seeds
        Seeds whose FedAvg run also trains the local-only arm.
    results
        Where runs are looked up and recorded.
    """
    for name in datasets:
        dataset = DATASETS[name]
        for algorithm in algorithms:
            for seed in seeds:
                path, overrides = dataset.config_for(algorithm)
                baseline = algorithm == "fedavg"
                local = baseline and (local_seeds is None or seed in local_seeds)
                overrides += [
                    f"federation.seed={seed}",
                    f"baselines.pooled={'true' if baseline else 'false'}",
                    f"baselines.local={'true' if local else 'false'}",
                ]
                if rounds is not None:
                    overrides.append(f"federation.rounds={rounds}")
                key: dict[str, Any] = {
                    "table": "algorithms",
                    "dataset": name,
                    "algorithm": algorithm,
                    "seed": seed,
                    "rounds_override": rounds,
                    "local": local,
                }
                cached = results.find(key)
                if cached is not None:
                    print(f"[cached] {_progress_line(cached)}", flush=True)
                    continue
                outcome = run_one(
                    key=key, config_path=path, overrides=overrides, metric=dataset.metric
                )
                outcome.extra["config"] = str(path.relative_to(ROOT))
                print(_progress_line(results.add(outcome)), flush=True)


def _progress_line(row: dict[str, Any]) -> str:
    where = row.get("dataset") or f"robustness/{row.get('condition')}"
    head = f"{where:<24} {row['algorithm']:<16} seed {row['seed']} rounds {row['rounds']:>3}"
    if row.get("error"):
        return f"{head}  FAILED {row['error']}  ({row['wall_s']:.1f}s)"
    arms = "  ".join(f"{arm} {_fmt(v)}" for arm, v in sorted(row["arms"].items()))
    walls = " ".join(f"{arm} {v:.1f}s" for arm, v in sorted(row.get("arm_wall_s", {}).items()))
    return f"{head}  {arms}  wall {row['wall_s']:.1f}s ({walls})"


def algorithms_table(
    rows: Sequence[dict[str, Any]], *, datasets: Sequence[str], algorithms: Sequence[str]
) -> str:
    """The markdown table of algorithm x data set, with notes and wall times.

    Parameters
    ----------
    rows
        Results-file rows of the algorithms table.
    datasets, algorithms
        Columns and rows to show, in order.

    Returns
    -------
    str
        Markdown text.
    """
    rows = [r for r in rows if r.get("table") == "algorithms" and r.get("error") is None]
    shown = [d for d in datasets if any(r["dataset"] == d for r in rows)]

    def values(dataset: str, algorithm: str, arm: str) -> list[float | None]:
        source = "fedavg" if arm in ("pooled", "local") else algorithm
        out: list[float | None] = []
        for r in _latest(rows, dataset=dataset, algorithm=source):
            if arm in r["arms"]:
                out.append(r["arms"][arm])
        return out

    head = "| algorithm | " + " | ".join(DATASETS[d].title for d in shown) + " |"
    lines = [head, "| --- |" + " --- |" * len(shown)]
    for label, algorithm, arm in [
        ("pooled", "fedavg", "pooled"),
        ("local", "fedavg", "local"),
        *[(a, a, "federated") for a in algorithms],
    ]:
        cells = [_cell(values(d, algorithm, arm)) for d in shown]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    notes = ["", "Cells: final-round test metric, mean +- sd over seeds."]
    for d in shown:
        ds = DATASETS[d]
        these = [r for r in rows if r["dataset"] == d]
        seeds = sorted({int(r["seed"]) for r in these})
        local_seeds = sorted({int(r["seed"]) for r in these if "local" in r["arms"]})
        notes.append(
            f"- {ds.title}: {ds.metric_name}; rounds {_rounds_text(these)}; seeds {seeds}; "
            f"local row from seeds {local_seeds}; config `{ds.config.relative_to(ROOT)}`"
            + (f" with {', '.join(ds.overrides)}" if ds.overrides else "")
            + ("; `<strategy>.toml` where one exists" if ds.per_strategy_dir else "")
            + "."
        )
    notes += [
        "- `pooled` and `local` come from the FedAvg runs' baseline arms (same training "
        "budget as the federation, except Fed-Heart-Disease's pooled arm: FLamby's "
        "Adam recipe). On image data `local` is each site's own model scored on the "
        "central test set, averaged with training-set-size weights; on Fed-Heart-Disease "
        "it is each hospital's own model on its own test split.",
        "- Image data sets: SCAFFOLD and FedNova train locally with plain SGD "
        "(lr 0.01, momentum 0) instead of the configs' Adam (lr 0.002 demo, 0.001 "
        "BreastMNIST), because both assume plain SGD steps; every other strategy uses "
        "the config's own local training.",
        "- Krum: `num_byzantine` = 0 with 4 sites, 1 with 5 (`federation.min_sites` = 2f + 3); "
        "cyclic: `federation.min_sites` = 1; all other strategy options are defaults "
        "(or the Fed-Heart-Disease file's own).",
    ]
    walls = ["", "Mean wall time per run, seconds (FedAvg includes its baseline arms):", ""]
    walls.append("| algorithm | " + " | ".join(DATASETS[d].title for d in shown) + " |")
    walls.append("| --- |" + " --- |" * len(shown))
    for algorithm in algorithms:
        cells = []
        for d in shown:
            ws = [float(r["wall_s"]) for r in _latest(rows, dataset=d, algorithm=algorithm)]
            cells.append(f"{statistics.fmean(ws):.1f}" if ws else "-")
        walls.append(f"| {algorithm} | " + " | ".join(cells) + " |")
    return "\n".join(lines + notes + walls)


def _latest(rows: Sequence[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    """The last row per seed among those matching ``match``."""
    by_seed: dict[int, dict[str, Any]] = {}
    for r in rows:
        if all(r.get(k) == v for k, v in match.items()):
            by_seed[int(r["seed"])] = r
    return [by_seed[s] for s in sorted(by_seed)]


# ---------------------------------------------------------------- robustness table


def largest_site(config: Config) -> tuple[str, int, int]:
    """The site with the most training examples (ties: first by name).

    Parameters
    ----------
    config
        The run's config; its data are loaded and partitioned (no training).

    Returns
    -------
    tuple of str, int, int
        Site name, its training examples and all sites' training examples.
    """
    data = load_data(config)
    sizes = {name: len(splits.train) for name, splits in data.sites.items()}
    name = sorted(sizes, key=lambda s: (-sizes[s], s))[0]
    return name, sizes[name], sum(sizes.values())


def run_robustness(
    *,
    seeds: Sequence[int],
    partition_seed: int | None,
    partition: str,
    rounds: int | None,
    noise_std: float,
    strategies: Sequence[str],
    results: Results,
) -> None:
    """Run every (strategy, condition, seed) of the robustness table not yet in ``results``.

    Parameters
    ----------
    seeds
        Training seeds (``federation.seed``).
    partition_seed
        ``partition.seed``: one fixed partition (hence one faulty site) for every
        training seed; ``None`` lets each seed draw its own partition.
    partition
        ``"dirichlet"`` (alpha 0.3, as in the algorithm table) or ``"iid"``.
    rounds
        ``federation.rounds``, or ``None`` for the config's own.
    noise_std
        ``fault_noise_std`` of the noise condition.
    strategies
        Aggregators to compare.
    results
        Where runs are looked up and recorded.
    """
    dataset = DATASETS["breastmnist"]
    for seed in seeds:
        layout = IID_PARTITION if partition == "iid" else BREAST_PARTITION
        base = [*layout, f"federation.seed={seed}"]
        # A partition seed equal to the training seed is the default behaviour:
        # such runs share their cache key with runs made without one.
        fixed = partition_seed if partition_seed not in (None, seed) else None
        if fixed is not None:
            base.append(f"partition.seed={fixed}")
        site, n_site, n_total = largest_site(load_config(dataset.config, overrides=base))
        print(f"seed {seed}: faulty site {site} ({n_site} of {n_total} training examples)")
        runs: list[tuple[str, str, list[str]]] = []
        for row_name in strategies:
            strategy, options = ROBUST_VARIANTS.get(row_name, (row_name, ()))
            for condition in CONDITIONS:
                overrides = [*base, f"strategy.name={strategy}", *options]
                overrides += ["federation.min_sites=5"]
                if condition == "scale":
                    overrides += [
                        f'sites.{site}.fault="scale"',
                        f"sites.{site}.fault_scale={FAULT_SCALE}",
                    ]
                elif condition == "noise":
                    overrides += [
                        f'sites.{site}.fault="noise"',
                        f"sites.{site}.fault_noise_std={noise_std}",
                    ]
                runs.append((row_name, condition, overrides))
        if "fedavg" in strategies:
            # The reference a robust rule can at best reach: FedAvg over the honest
            # sites only. The faulty site sends NaN, which it refuses to send, so it
            # is left out of every round (min_sites 4).
            runs.append(
                (
                    ABSENT_ROW,
                    "absent",
                    [
                        *base,
                        "strategy.name=fedavg",
                        "federation.min_sites=4",
                        f'sites.{site}.fault="nan"',
                    ],
                )
            )
        for row_name, condition, overrides in runs:
            overrides += ["baselines.pooled=false", "baselines.local=false"]
            if rounds is not None:
                overrides.append(f"federation.rounds={rounds}")
            key: dict[str, Any] = {
                "table": "robustness",
                "algorithm": row_name,
                "condition": condition,
                "seed": seed,
                "partition_seed": fixed,
                # None: the Dirichlet partition (rows made before this key existed).
                "partition": "iid" if partition == "iid" else None,
                "rounds_override": rounds,
                "noise_std": noise_std if condition == "noise" else None,
            }
            cached = results.find(key)
            if cached is not None:
                print(f"[cached] {_progress_line(cached)}", flush=True)
                continue
            outcome = run_one(
                key=key, config_path=dataset.config, overrides=overrides, metric=central_auc
            )
            outcome.extra.update(
                {"faulty_site": site, "faulty_n_train": n_site, "total_n_train": n_total}
            )
            print(_progress_line(results.add(outcome)), flush=True)


TAIL_ROUNDS = 10


def _tail_mean(curve: Sequence[float | None] | None) -> float:
    """Mean central AUC of a run's last :data:`TAIL_ROUNDS` rounds (NaN without a curve)."""
    values = [v for v in (curve or [])[-TAIL_ROUNDS:] if v is not None and not math.isnan(v)]
    return statistics.fmean(values) if values else math.nan


def robustness_table(
    rows: Sequence[dict[str, Any]],
    *,
    strategies: Sequence[str],
    partition_seed: int | None,
    partition: str,
) -> str:
    """Strategy x {clean, scale x10, noise}, with the change from clean and the goal.

    Parameters
    ----------
    rows
        Results-file rows of the robustness table.
    strategies
        Rows to show, in order.
    partition_seed
        Only runs on this fixed partition (a run whose training seed equals it
        counts); ``None``: only runs whose partition followed their seed.
    partition
        Only runs on this partition method (``"dirichlet"`` or ``"iid"``).

    Returns
    -------
    str
        Markdown text.
    """

    def on_partition(row: dict[str, Any]) -> bool:
        if (row.get("partition") or "dirichlet") != partition:
            return False
        fixed = row.get("partition_seed")
        if partition_seed is None:
            return fixed is None
        return (fixed if fixed is not None else row["seed"]) == partition_seed

    rows = [r for r in rows if r.get("table") == "robustness" and on_partition(r)]
    ok = [r for r in rows if r.get("error") is None]
    lines = [
        "| strategy | clean | scale x10 | noise | change (scale / noise) | goal met "
        "| change, last-10-round mean (scale / noise) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for strategy in strategies:
        if not any(r["algorithm"] == strategy for r in rows):
            continue  # a row never run on this partition
        means: dict[str, float] = {}
        smooth: dict[str, float] = {}
        cells: list[str] = []
        for condition in CONDITIONS:
            these = _latest(ok, algorithm=strategy, condition=condition)
            tails = [_tail_mean(r.get("curve")) for r in these]
            smooth[condition] = statistics.fmean(tails) if tails else math.nan
            vals = [r["arms"].get("federated") for r in these]
            failed = [r for r in rows if r["algorithm"] == strategy and r["condition"] == condition]
            if not these and failed:
                cells.append("failed")
                means[condition] = math.nan
                continue
            cells.append(_cell(vals))
            means[condition] = _mean_sd(vals)[0] if vals else math.nan
        drops = [means[c] - means["clean"] for c in ("scale", "noise")]
        change = " / ".join("nan" if math.isnan(d) else f"{d:+.3f}" for d in drops)
        if any(math.isnan(d) for d in drops):
            goal = "n/a"
        elif strategy == "fedavg":
            goal = "yes" if all(d <= -COLLAPSE_DROP for d in drops) else "no"
        else:
            goal = "yes" if all(abs(d) <= ROBUST_TOLERANCE for d in drops) else "no"
        late = " / ".join(
            "nan" if math.isnan(d) else f"{d:+.3f}"
            for d in (smooth[c] - smooth["clean"] for c in ("scale", "noise"))
        )
        label = ROBUST_LABELS.get(strategy, strategy)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {change} | {goal} | {late} |")

    absent = [r["arms"].get("federated") for r in _latest(ok, algorithm=ABSENT_ROW)]
    if absent:
        lines.append(
            f"| fedavg, faulty site left out (reference) | - | {_cell(absent)} | {_cell(absent)} "
            "| - | - | - |"
        )
    faulty = sorted(
        {(r["seed"], r["faulty_site"], r["faulty_n_train"], r["total_n_train"]) for r in ok}
    )
    noise = sorted({r["noise_std"] for r in ok if r.get("noise_std") is not None})
    seeds = sorted({int(r["seed"]) for r in ok})
    walls = [float(r["wall_s"]) for r in ok]
    layout = "IID" if partition == "iid" else "Dirichlet alpha 0.3"
    notes = [
        "",
        f"Central test AUC at the final round (rounds {_rounds_text(ok)}), seeds {seeds}; "
        f"BreastMNIST, {layout} over 5 sites, `federation.min_sites = 5`, "
        "local Adam as in `examples/breastmnist.toml`.",
        "- Faulty site (the largest by training examples): "
        + "; ".join(f"seed {s}: {site} ({n} of {t})" for s, site, n, t in faulty)
        + ".",
        f"- scale x10: the site sends `x + {FAULT_SCALE:g} (y - x)`; noise: it sends "
        f"`x + N(0, std^2)` with std {', '.join(f'{v:g}' for v in noise) or '?'} "
        f"(`fault_noise_std`; the framework's default is {DEFAULT_NOISE_STD:g}), "
        "x the global model.",
        "- Krum: `num_byzantine = 1`, `num_selected = 1`; multi_krum: Krum with "
        "`num_selected = 3` (the mean of the 3 best-scored updates); trimmed mean: "
        "`trim_fraction = 0.2` (one update cut at each end of 5).",
        '- uniform: one vote per site (`weighting = "uniform"`, the rule of Yin et al.); '
        "example-weighted: each site's vote in proportion to its training examples, no site "
        f'above {ROBUST_MAX_WEIGHT_SHARE:g} of the total (`weighting = "examples"`, '
        f"`max_weight_share = {ROBUST_MAX_WEIGHT_SHARE:g}`); the trimmed mean trims one site "
        "at each end in both, and the weighted row weights the mean of the rest.",
        "- Reference row: FedAvg with the faulty site left out of every round (it is "
        "told to send NaN, which a site refuses to send; `federation.min_sites = 4`): "
        "about the best a robust rule can do once that site's data is lost.",
        f"- Last column: the same change on the mean AUC of the last {TAIL_ROUNDS} rounds "
        "(the final round alone moves by a few points from round to round on 156 test images).",
        f"- Goal: FedAvg at least {COLLAPSE_DROP:.2f} AUC below clean under both faults; "
        f"robust rules within {ROBUST_TOLERANCE:.2f} of their clean run.",
    ]
    if walls:
        notes.append(
            f"- Wall time per run: {min(walls):.0f}-{max(walls):.0f} s "
            f"(mean {statistics.fmean(walls):.0f} s)."
        )
    return "\n".join(lines + notes)


# ---------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line, run what is missing, print and write the table.

    Parameters
    ----------
    argv
        Arguments (``sys.argv[1:]`` when ``None``).
    """
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=list(DATASETS))
    parser.add_argument("--algorithms", nargs="+", choices=ALGORITHMS, default=list(ALGORITHMS))
    parser.add_argument(
        "--rounds", type=int, help="override federation.rounds (default: each config's own)"
    )
    parser.add_argument(
        "--local-seeds",
        type=int,
        nargs="*",
        help="seeds whose FedAvg run also trains the local-only arm (default: every seed)",
    )
    parser.add_argument(
        "--robustness", action="store_true", help="run the faulty-site table instead"
    )
    parser.add_argument(
        "--noise-std",
        type=float,
        default=DEFAULT_NOISE_STD,
        help="fault_noise_std of the noise condition (robustness table)",
    )
    parser.add_argument(
        "--partition-seed",
        type=int,
        help="robustness: one fixed partition (partition.seed) for every training seed",
    )
    parser.add_argument(
        "--robust-partition",
        choices=("dirichlet", "iid"),
        default="dirichlet",
        help="robustness: the 5-site partition (Dirichlet alpha 0.3, or IID)",
    )
    parser.add_argument(
        "--robust-rows",
        nargs="+",
        choices=ROBUST_STRATEGIES,
        default=list(ROBUST_STRATEGIES),
        help="robustness: the rows to run (the table shows every row with results)",
    )
    parser.add_argument("--results", type=Path, help="JSON-lines file of runs (read and appended)")
    parser.add_argument(
        "--table-only", action="store_true", help="build the table from --results, train nothing"
    )
    parser.add_argument("--out", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    if args.table_only and args.results is None:
        parser.error("--table-only needs --results")

    results = Results(args.results)
    if args.robustness:
        if not args.table_only:
            run_robustness(
                seeds=args.seeds,
                partition_seed=args.partition_seed,
                partition=args.robust_partition,
                rounds=args.rounds,
                noise_std=args.noise_std,
                strategies=args.robust_rows,
                results=results,
            )
        text = robustness_table(
            results.rows,
            strategies=ROBUST_STRATEGIES,
            partition_seed=args.partition_seed,
            partition=args.robust_partition,
        )
    else:
        if not args.table_only:
            run_algorithms(
                datasets=args.datasets,
                algorithms=args.algorithms,
                seeds=args.seeds,
                rounds=args.rounds,
                local_seeds=args.local_seeds,
                results=results,
            )
        text = algorithms_table(results.rows, datasets=list(DATASETS), algorithms=args.algorithms)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
