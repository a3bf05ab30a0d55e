"""One arm's final score histograms, its operating threshold, and what they give at it.

The threshold is chosen on the sites' validation histograms summed over sites,
and only then applied to the test histograms (central and per site). Every
histogram has had its small cells merged at its site
(:mod:`flmi.site.small_cells`); a site whose test split has too few positives
or negatives to merge sends none and is listed as ``withheld``; ``overall``
then sums the sites that sent one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flmi.core.messages import ScoreHistogram
from flmi.report.curves import (
    Threshold,
    choose_threshold,
    confusion_json,
    histogram_json,
    total,
)


@dataclass(frozen=True)
class ArmCurves:
    """The histograms of one arm's final model(s), and the threshold chosen on validation.

    Parameters
    ----------
    test_per_site
        Each site's test-split histogram.
    val_per_site
        Each site's validation-split histogram (sites without validation data left out).
    test_central
        The central test set's histogram (simulation only; ``None`` otherwise).
    threshold
        The operating threshold, chosen on ``val_per_site`` alone.
    withheld
        Sites that sent no test histogram (a class with 1 to ``min_count - 1``
        patients on their test split).
    """

    test_per_site: Mapping[str, ScoreHistogram]
    val_per_site: Mapping[str, ScoreHistogram]
    test_central: ScoreHistogram | None
    threshold: Threshold
    withheld: tuple[str, ...] = ()


def arm_curves(
    *,
    test_per_site: Mapping[str, ScoreHistogram],
    val_per_site: Mapping[str, ScoreHistogram],
    test_central: ScoreHistogram | None,
    bins: int,
    target_sensitivity: float | None,
    withheld: Sequence[str] = (),
) -> ArmCurves:
    """Collect an arm's histograms and choose its threshold on the validation ones only."""
    with_val = {s: h for s, h in val_per_site.items() if int(h.positives.sum() + h.negatives.sum())}
    val = total([with_val[s] for s in sorted(with_val)])
    return ArmCurves(
        test_per_site=dict(test_per_site),
        val_per_site=with_val,
        test_central=test_central,
        threshold=choose_threshold(val=val, bins=bins, target_sensitivity=target_sensitivity),
        withheld=tuple(sorted(withheld)),
    )


def overall_test(curves: ArmCurves) -> ScoreHistogram | None:
    """Every site's test histogram summed: all the federation's test patients together."""
    return total([curves.test_per_site[s] for s in sorted(curves.test_per_site)])


def at_threshold_json(curves: ArmCurves) -> dict[str, Any]:
    """Sensitivity and specificity (with counts) at the threshold on every test set."""
    overall = overall_test(curves)
    t = curves.threshold
    return {
        "global": confusion_json(curves.test_central, t) if curves.test_central else None,
        "overall": confusion_json(overall, t) if overall is not None else None,
        "per_site": {s: confusion_json(h, t) for s, h in sorted(curves.test_per_site.items())},
    }


def curves_json(curves: ArmCurves) -> dict[str, Any]:
    """One arm's entry in ``curves.json``: counts, ROC, calibration, threshold, confusion."""
    overall = overall_test(curves)
    val = total([curves.val_per_site[s] for s in sorted(curves.val_per_site)])
    return {
        "threshold": curves.threshold.to_json(),
        "test": {
            "global": histogram_json(curves.test_central) if curves.test_central else None,
            "overall": histogram_json(overall) if overall is not None else None,
            "per_site": {s: histogram_json(h) for s, h in sorted(curves.test_per_site.items())},
        },
        "val": {
            "overall": histogram_json(val) if val is not None else None,
            "per_site": {s: histogram_json(h) for s, h in sorted(curves.val_per_site.items())},
        },
        "at_threshold": at_threshold_json(curves),
        "withheld": list(curves.withheld),
    }
