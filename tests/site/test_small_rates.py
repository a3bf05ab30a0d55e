"""A site withholds every rate whose confusion cells hold 1 to min_count - 1 patients."""

from __future__ import annotations

import math

import numpy as np

from flmi.site.small_cells import withhold_small_rates
from flmi.tasks.metrics import rate_cells


def test_ten_positives_eight_detected_withholds_sensitivity_under_min_count_5() -> None:
    # 10 positives (label 1), 8 said positive: TP 8, FN 2 -> sensitivity withheld.
    # 10 negatives, all said negative: TN 10, FP 0 -> specificity 1.0 kept.
    # Correct 18, wrong 2 -> accuracy withheld too.
    labels = np.array([1] * 10 + [0] * 10)
    said = np.array([1] * 8 + [0] * 2 + [0] * 10)
    probs = np.stack([1.0 - said, said.astype(float)], axis=1)
    cells = rate_cells(labels=labels, probs=probs, positive_label=1)
    assert cells["sensitivity"] == (8, 2)
    assert cells["specificity"] == (10, 0)
    assert cells["accuracy"] == (18, 2)
    metrics = {"sensitivity": 0.8, "specificity": 1.0, "accuracy": 0.9, "loss": 0.3}
    ci = {"sensitivity": (0.6, 1.0), "specificity": (1.0, 1.0)}

    out, out_ci, withheld = withhold_small_rates(metrics=metrics, ci=ci, cells=cells, min_count=5)

    assert withheld == ("accuracy", "sensitivity")
    assert math.isnan(out["sensitivity"]) and math.isnan(out["accuracy"])
    assert out["specificity"] == 1.0 and out["loss"] == 0.3
    assert all(math.isnan(v) for v in out_ci["sensitivity"])
    assert out_ci["specificity"] == (1.0, 1.0)


def test_min_count_1_withholds_nothing() -> None:
    cells = {"sensitivity": (1, 1)}

    out, _, withheld = withhold_small_rates(
        metrics={"sensitivity": 0.5}, ci={}, cells=cells, min_count=1
    )

    assert withheld == () and out == {"sensitivity": 0.5}
