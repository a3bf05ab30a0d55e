"""Report cost: the HTML report at 10, 50 and 200 sites, before and after per-site summaries.

Each size trains a finished run first (``flmi/examples/demo.toml`` on a
MedMNIST-format file of 4,000 generated 28x28 images, iid over the sites,
baselines off, ``report.min_count = 1`` so every site's curves reach the
report: the most the report can be asked to draw). Then, on that run
directory, it times:

- **every site drawn**: the report drawing every site's bars, labels and ROC
  curve, without reusing a figure (what ``flmi report`` did before figures
  were summarised past :data:`flmi.report.site_selection.SITE_LIMIT` sites
  and kept in ``RUN_DIR/figures``);
- **summarised, fresh**: today's report with no stored figures (the report
  that ends ``flmi run``);
- **summarised, re-render**: ``flmi report`` again on the same run (every
  figure reused);

each the median CPU time of ``--repeats`` builds after one warm-up build
(the first two interleaved),
next to the wall time of the run itself
(``run_experiment``: training, evaluation and 100 bootstrap resamples; the
report excluded).

Usage::

    .venv/bin/python benchmarks/report_cost.py [--sites 10 50 200] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from flmi.config import load_config
from flmi.report.figure_cache import FigureCache
from flmi.report.html import build_report
from flmi.report.site_selection import SITE_LIMIT

DEMO = Path(__file__).resolve().parents[1] / "flmi" / "examples" / "demo.toml"
N_IMAGES = {"train": 2800, "val": 400, "test": 800}


def _images(path: Path) -> Path:
    """A MedMNIST-format file: images whose brightness depends on the label (learnable)."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in N_IMAGES.items():
        labels = rng.integers(0, 2, (n, 1)).astype(np.uint8)
        images = rng.random((n, 28, 28)) * 200 + 40 * labels[:, :, None]
        arrays[f"{split}_images"] = images.clip(0, 255).astype(np.uint8)
        arrays[f"{split}_labels"] = labels
    np.savez(path, **arrays)
    return path


def _train(images: Path, sites: int, out: Path) -> float:
    from flmi.simulation import run_experiment

    config = load_config(
        DEMO,
        overrides=[
            "data.source=medmnist",
            f"data.path={images}",
            "partition.method=iid",
            f"partition.num_sites={sites}",
            "partition.min_examples_per_site=1",
            "federation.rounds=2",
            "baselines.pooled=false",
            "baselines.local=false",
            "report.min_count=1",
            "report.bootstrap_resamples=100",
        ],
    )
    start = time.perf_counter()
    run_experiment(config=config, out=out)
    return time.perf_counter() - start


def _cpu_s(build: Callable[[], object]) -> float:
    """CPU seconds of ``build`` (the report is one thread; CPU time is less disturbed than wall
    time by other work on a shared machine)."""
    start = time.process_time()
    build()
    return time.process_time() - start


def _report_times(run: Path, sites: int, repeats: int) -> tuple[float, float, float]:
    """Median CPU seconds: every site drawn, summarised without stored figures, re-rendered.

    The first two alternate, so a change in the machine's load hits both alike.
    """
    build_report(run, cache=FigureCache(directory=None))  # warm-up: fonts, first draws
    every, fresh = [], []
    for _ in range(repeats):
        every.append(
            _cpu_s(lambda: build_report(run, cache=FigureCache(directory=None), site_limit=sites))
        )
        fresh.append(_cpu_s(lambda: build_report(run, cache=FigureCache(directory=None))))
    build_report(run)  # fills RUN_DIR/figures
    again = [_cpu_s(lambda: build_report(run)) for _ in range(repeats)]
    return statistics.median(every), statistics.median(fresh), statistics.median(again)


def main() -> None:
    """Train one run per size, time its report three ways, print one table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sites", type=int, nargs="+", default=[10, 50, 200])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        images = _images(Path(tmp) / "images.npz")
        for sites in args.sites:
            run = Path(tmp) / f"run{sites}"
            train_s = _train(images, sites, run)
            rows.append((sites, train_s, *_report_times(run, sites, args.repeats)))
            print(f"{sites} sites done", flush=True)
    print(f"\nper-site figures summarised past {SITE_LIMIT} sites; median of {args.repeats}")
    print(
        "| sites | run, wall (s) | every site drawn (CPU s) | summarised, fresh (CPU s) "
        "| summarised, re-render (CPU s) | fresh / every site |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for sites, train_s, every, fresh, again in rows:
        print(
            f"| {sites} | {train_s:.1f} | {every:.2f} | {fresh:.2f} | {again:.2f} "
            f"| {fresh / every:.2f} |"
        )


if __name__ == "__main__":
    main()
