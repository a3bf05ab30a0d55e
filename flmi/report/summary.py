"""What ``summary.json`` holds: final numbers per arm, their intervals, sites, versions."""

from __future__ import annotations

import dataclasses
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import numpy as np
import torch

from flmi import __version__
from flmi.config import PrivacyConfig
from flmi.core.federation import Metrics, RoundRecord, json_metrics
from flmi.core.keys import Arm, Record
from flmi.data.arrays import FederatedData
from flmi.data.partition import site_label_summary
from flmi.privacy.noise_source import FROM_OS, FROM_SEED, NO_GUARANTEE
from flmi.report.operating import ArmCurves, at_threshold_json
from flmi.report.summary_schema import ArmIntervals, ArmSummary, Interval
from flmi.site.qa import Count, suppress, with_secondary


@dataclass(frozen=True)
class ArmResult:
    """One arm's final-round metrics and their bootstrap intervals."""

    global_metrics: Metrics | None
    per_site: Mapping[str, Metrics]
    site_mean: Metrics
    ci_global: Mapping[str, tuple[float, float]] | None = None
    ci_per_site: Mapping[str, Mapping[str, tuple[float, float]]] = field(default_factory=dict)
    curves: ArmCurves | None = None


def versions() -> dict[str, str]:
    """Versions of everything that shapes the numbers (MONAI's from its metadata, not imported)."""
    import safetensors

    return {
        "flmi": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "monai": metadata.version("monai"),
        "safetensors": safetensors.__version__,
    }


def json_intervals(
    intervals: Mapping[str, tuple[float, float]] | None,
) -> dict[str, Interval] | None:
    """Intervals ready for JSON: sorted, a NaN end written as ``None``."""
    if intervals is None:
        return None
    return {
        k: (_finite_or_none(pair[0]), _finite_or_none(pair[1]))
        for k, pair in sorted(intervals.items())
    }


def _finite_or_none(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def arm_summary(arm: ArmResult) -> ArmSummary:
    """One arm's entry in ``summary.json``.

    Beside the metrics and their intervals: the operating ``threshold`` (chosen
    on validation data only) and ``at_threshold``, the test sensitivity and
    specificity there, central (``global``), all sites together (``overall``)
    and ``per_site``.
    """
    return ArmSummary(
        per_site={s: _metrics(m) for s, m in sorted(arm.per_site.items())},
        site_mean=_metrics(arm.site_mean),
        global_metrics=json_metrics(arm.global_metrics),
        ci=ArmIntervals(
            global_intervals=json_intervals(arm.ci_global),
            per_site={s: _intervals(c) for s, c in sorted(arm.ci_per_site.items())},
        ),
        threshold=arm.curves.threshold.to_json() if arm.curves is not None else None,
        at_threshold=at_threshold_json(arm.curves) if arm.curves is not None else None,
    )


def _metrics(metrics: Metrics) -> dict[str, float | None]:
    out = json_metrics(metrics)
    assert out is not None
    return out


def _intervals(intervals: Mapping[str, tuple[float, float]]) -> dict[str, Interval]:
    out = json_intervals(intervals)
    assert out is not None
    return out


def arm_json(arm: ArmResult) -> dict[str, Any]:
    """One arm's entry in ``summary.json``, as JSON (see :func:`arm_summary`)."""
    return arm_summary(arm).to_json()


def sites_json(data: FederatedData, *, label_counts: bool = True, min_count: int) -> dict[str, Any]:
    """Split sizes per site, and label counts where labels are classes, small counts suppressed.

    Every count from 1 to ``min_count - 1`` is written as ``None``, as the data
    report does (:mod:`flmi.site.qa`); when that hides exactly one class of a
    split, the next smallest is hidden too, so the split size does not give it
    back by subtraction. A regression or survival target is a number per
    patient: counting its values would list them, so only the sizes are
    written (the ``data`` section summarises targets with small counts
    suppressed).
    """

    def hide(n: object) -> Count:
        assert isinstance(n, int)
        return suppress(n, min_count=min_count)

    def classes(counts: Mapping[str, int]) -> dict[str, Count]:
        return with_secondary({k: hide(v) for k, v in counts.items()}, dict(counts))

    out: dict[str, Any] = {}
    for site, info in site_label_summary(data=data).items():
        by_split = info["label_counts"]
        assert isinstance(by_split, dict)
        out[site] = {
            Record.N_TRAIN: hide(info["n_train"]),
            "n_val": hide(info["n_val"]),
            "n_test": hide(info["n_test"]),
        }
        if label_counts:
            hidden = {split: classes(counts) for split, counts in by_split.items()}
            out[site][Record.LABEL_COUNTS] = hidden["train"]
            out[site]["label_counts_by_split"] = hidden
        unlabeled = data.sites[site].num_unlabeled
        if unlabeled:
            out[site]["n_unlabeled"] = hide(unlabeled)  # a count; there are no labels to count
    return out


def privacy_block(privacy: PrivacyConfig, history: Sequence[RoundRecord]) -> dict[str, Any]:
    """``summary.json``'s privacy block: the settings, and what was spent by the last round.

    The spent part (epsilon, the adapted clip, each site's ledger) is the last
    round record's, so a simulation and a deployment report it alike. Only the
    federated arm is private; a simulation's pooled and local baselines are not.
    Under DP, ``noise_source`` says where the noise came from (``"os_csprng"``,
    or ``"run_seed"`` with ``privacy.insecure_reproducible_noise``, when
    ``guarantee`` says there is none).
    """
    settings = {k: v for k, v in dataclasses.asdict(privacy).items() if v is not None}
    spent = dict(history[-1].privacy) if history else {}
    out = {**settings, **spent, "private_arms": [Arm.FEDERATED.value]}
    if privacy.dp != "none":
        out["noise_source"] = FROM_SEED if privacy.insecure_reproducible_noise else FROM_OS
        if privacy.insecure_reproducible_noise:
            out["guarantee"] = NO_GUARANTEE
    return out
