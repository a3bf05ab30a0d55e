"""No count of 1 to min_count - 1 patients in a Fed-Heart-Disease run's curves.json or summary.json.

Count fields, precisely: in ``curves.json`` the ``positives`` and
``negatives`` lists of every histogram, every calibration ``count``, and
``tp``, ``fn``, ``fp``, ``tn`` wherever they appear; in ``summary.json`` the
same confusion counts, and in the ``sites`` and ``data`` sections ``n_train``,
``n_val``, ``n_test``, ``n_unlabeled``, every value under ``label_counts``,
``label_counts_by_split``, ``counts`` and ``labels``, and every ``intensity``
bin. A count is a whole number (calibration counts are written as floats);
``data.sites.*.distance`` holds distances, not counts. ``None`` is a suppressed count.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flmi.config import load_config
from flmi.simulation import run_experiment
from tests.conftest import REPO, SHARED_DATA

COUNT_KEYS = frozenset(
    {
        "positives",
        "negatives",
        "count",
        "tp",
        "fn",
        "fp",
        "tn",
        "n_train",
        "n_val",
        "n_test",
        "n_unlabeled",
        "label_counts",
        "label_counts_by_split",
        "counts",
        "labels",
        "intensity",
    }
)

requires_heart = pytest.mark.skipif(
    not (SHARED_DATA / "heart_disease").is_dir(),
    reason="real Heart Disease files not found (the shared data folder is absent)",
)


def _values(value: Any) -> Iterator[Any]:
    """Every leaf under a count field (lists and nested dicts such as label counts by split)."""
    if isinstance(value, dict):
        for v in value.values():
            yield from _values(v)
    elif isinstance(value, list):
        for v in value:
            yield from _values(v)
    else:
        yield value


def _is_small(value: Any, min_count: int) -> bool:
    """A whole number of patients from 1 to ``min_count - 1`` (calibration counts are floats)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return float(value).is_integer() and 0 < value < min_count


def small_counts(doc: Any, *, min_count: int, where: str = "") -> list[tuple[str, Any]]:
    """``(path, value)`` of every count field's value from 1 to ``min_count - 1``."""
    found: list[tuple[str, Any]] = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            path = f"{where}.{key}"
            if key == "distance":  # the data report's distances (0..1), not counts
                continue
            if key in COUNT_KEYS:
                found += [(path, v) for v in _values(value) if _is_small(v, min_count)]
            else:
                found += small_counts(value, min_count=min_count, where=path)
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            found += small_counts(value, min_count=min_count, where=f"{where}[{i}]")
    return found


def test_the_scan_finds_a_small_count_nested_anywhere() -> None:
    doc = {"arms": {"a": {"at_threshold": {"per_site": {"s": {"tp": 1, "sensitivity": 0.5}}}}}}
    doc["sites"] = {"s": {"label_counts_by_split": {"test": {"0": 2, "1": None}}, "n_test": 9}}

    found = small_counts(doc, min_count=5)

    assert found == [
        (".arms.a.at_threshold.per_site.s.tp", 1),
        (".sites.s.label_counts_by_split", 2),
    ]


@requires_heart
@pytest.mark.slow
def test_heart_run_writes_no_count_under_min_count(tmp_path: Path) -> None:
    # Switzerland's test split holds 1 patient without heart disease; Long Beach VA's
    # scores spread 45 patients over 100 bins: both leave small cells unless suppressed.
    overrides = ["federation.rounds=2", "federation.local_steps=5", "baselines.pooled_epochs=1"]
    config = load_config(REPO / "examples" / "heart_disease" / "fedavg.toml", overrides=overrides)
    min_count = config.report.min_count

    run_experiment(config=config, out=tmp_path / "run")

    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    curves = json.loads((tmp_path / "run" / "curves.json").read_text())
    assert min_count == 5
    assert small_counts(curves, min_count=min_count) == []
    assert small_counts(summary, min_count=min_count) == []
    # What was hidden is said, not dropped silently.
    assert summary["sites"]["switzerland"]["label_counts_by_split"]["test"] == {
        "0": None,
        "1": None,
    }
    assert curves["arms"]["federated"]["withheld"] == ["switzerland"]
    per_site = curves["arms"]["federated"]["test"]["per_site"]
    assert sorted(per_site) == ["cleveland", "hungary", "va"]
    shown = summary["sites"]
    for site, h in per_site.items():  # merged, never lost: every test patient still counted
        assert sum(h["positives"]) + sum(h["negatives"]) == shown[site]["n_test"]


def derived_small_counts(summary: dict[str, Any], *, min_count: int, positive: str) -> list[str]:
    """Counts a per-site rate and its published denominator give back, 1 to ``min_count - 1``.

    Accuracy times ``n_test`` is the correct predictions (the rest the wrong
    ones); sensitivity times the test positives the true positives (the rest
    the false negatives); specificity times the test negatives the true
    negatives (the rest the false positives). Bootstrap interval ends are
    resamples' rates, not counts of the split's patients, and are not scanned.
    """
    found: list[str] = []
    sites = summary["sites"]
    for arm, entry in summary["arms"].items():
        for part, per_site in [("per_site", entry.get("per_site", {}))]:
            for site, metrics in per_site.items():
                shown = sites[site]
                test = shown["label_counts_by_split"]["test"]
                pos = test.get(positive)
                neg = None if pos is None or shown["n_test"] is None else shown["n_test"] - pos
                for metric, total in (
                    ("accuracy", shown["n_test"]),
                    ("sensitivity", pos),
                    ("specificity", neg),
                ):
                    v = metrics.get(metric)
                    if v is None or total is None:
                        continue
                    hit = round(v * total)
                    if any(0 < c < min_count for c in (hit, total - hit)):
                        found.append(f"{arm}.{part}.{site}.{metric}")
    return sorted(set(found))


def test_derived_scan_finds_a_rate_that_gives_away_two_false_negatives() -> None:
    # 10 positives, 8 detected: sensitivity 0.8 x 10 = 8 true positives, 2 false negatives.
    summary = {
        "sites": {"s": {"n_test": 20, "label_counts_by_split": {"test": {"0": 10, "1": 10}}}},
        "arms": {"a": {"per_site": {"s": {"sensitivity": 0.8, "specificity": 0.5}}}},
    }

    assert derived_small_counts(summary, min_count=5, positive="1") == ["a.per_site.s.sensitivity"]


@requires_heart
@pytest.mark.slow
def test_heart_run_rates_give_back_no_count_under_min_count(tmp_path: Path) -> None:
    overrides = ["federation.rounds=2", "federation.local_steps=5", "baselines.pooled_epochs=1"]
    config = load_config(REPO / "examples" / "heart_disease" / "fedavg.toml", overrides=overrides)

    run_experiment(config=config, out=tmp_path / "run")

    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    positive = str(config.task.positive_label)
    assert derived_small_counts(summary, min_count=config.report.min_count, positive=positive) == []
    # A rate withheld under min_count reads None, as a suppressed count does.
    assert any(
        m is None
        for arm in summary["arms"].values()
        for s in arm["per_site"].values()
        for m in s.values()
    )
