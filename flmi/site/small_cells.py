"""Small-cell suppression of a site's score histogram, done at the site before it leaves.

A score histogram counts, per predicted-probability bin, the positives and
the negatives of one split. A cell of 1 or 2 says which bin one patient's
score fell in together with that patient's label, so no cell that leaves a
site may hold fewer than ``min_count`` patients (``[report] min_count``, the
same rule as the data report's).

Cells are never blanked (a ROC curve needs every count): adjacent bins are
merged instead, from the lowest score up, each group closing at the first bin
where both its positives and its negatives are 0 or at least ``min_count``;
what is left at the top joins the groups below it until it too passes. A
group's patients are counted in its lowest bin, so the sent histogram is
exactly the histogram of every score rounded down to its group's lower edge,
on the same bins as before: histograms of different sites still add up bin by
bin, and every count derived from them (a ROC point, a confusion count at a
threshold, a calibration group) is a sum of cells, so 0 or at least
``min_count`` too.

What that does to the curves: at every group edge the ROC point and the
confusion counts are exact; a threshold inside a group counts the group's
patients as below it (the rates are those at the group's upper edge); the
histogram AUC is that of the rounded scores, and
:func:`flmi.report.curves.auc_binning_bound` still bounds its gap to the
exact AUC. A split whose positives or negatives in all number 1 to
``min_count - 1`` cannot be merged into compliance and sends no histogram.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from flmi.core.messages import ScoreHistogram


def _fits(count: int, min_count: int) -> bool:
    return count == 0 or count >= min_count


def _groups(positives: np.ndarray, negatives: np.ndarray, min_count: int) -> list[int]:
    """The first bin of every group (the groups cover all bins, in order)."""
    starts: list[int] = []
    start, pos, neg = 0, 0, 0
    for i in range(positives.size):
        pos, neg = pos + int(positives[i]), neg + int(negatives[i])
        if pos + neg and _fits(pos, min_count) and _fits(neg, min_count):
            starts.append(start)
            start, pos, neg = i + 1, 0, 0
    if not starts:
        return [0]
    # What is left at the top joins the groups below until the merged group passes.
    while pos + neg and not (_fits(pos, min_count) and _fits(neg, min_count)) and starts:
        last = starts.pop()
        pos += int(positives[last:start].sum())
        neg += int(negatives[last:start].sum())
        start = last
    if pos + neg or not starts:
        starts.append(start)
    return starts


def merge_small_cells(histogram: ScoreHistogram, *, min_count: int) -> ScoreHistogram | None:
    """``histogram`` with adjacent bins merged until no cell holds 1 to ``min_count - 1``.

    Parameters
    ----------
    histogram
        The site's own counts.
    min_count
        Smallest non-zero count a cell may hold (1: the histogram unchanged).

    Returns
    -------
    ScoreHistogram or None
        The merged histogram (same bins, each group's counts in its lowest
        bin), or ``None`` when the split's positives or negatives in all
        number 1 to ``min_count - 1``, which no merging can hide.
    """
    if min_count < 1:
        raise ValueError(f"min_count must be at least 1, got {min_count}")
    if min_count == 1:
        return histogram
    pos, neg = histogram.positives, histogram.negatives
    if not (_fits(int(pos.sum()), min_count) and _fits(int(neg.sum()), min_count)):
        return None
    starts = _groups(pos, neg, min_count)
    ends = [*starts[1:], histogram.bins]
    out_pos = np.zeros_like(pos)
    out_neg = np.zeros_like(neg)
    for a, b in zip(starts, ends, strict=True):
        out_pos[a] = pos[a:b].sum()
        out_neg[a] = neg[a:b].sum()
    return ScoreHistogram(
        positive_label=histogram.positive_label, positives=out_pos, negatives=out_neg
    )


def withhold_small_rates(
    *,
    metrics: Mapping[str, float],
    ci: Mapping[str, tuple[float, float]],
    cells: Mapping[str, tuple[int, ...]],
    min_count: int,
) -> tuple[dict[str, float], dict[str, tuple[float, float]], tuple[str, ...]]:
    """``metrics`` and ``ci`` with every rate that gives away a small cell set to NaN.

    A rate times its published denominator is a count (sensitivity times the
    positives is the true positives, the positives less that the false
    negatives), so a rate is withheld when any count in ``cells[rate]``
    holds 1 to ``min_count - 1`` patients; its interval goes with it. NaN is
    what an undefined metric already reads as, written ``None``.

    Returns
    -------
    tuple
        The metrics, the intervals, and the names of the withheld rates.
    """
    if min_count < 1:
        raise ValueError(f"min_count must be at least 1, got {min_count}")
    withheld = tuple(
        sorted(
            m
            for m, counts in cells.items()
            if m in metrics and any(not _fits(int(c), min_count) for c in counts)
        )
    )
    nan = float("nan")
    out = {k: (nan if k in withheld else v) for k, v in metrics.items()}
    out_ci = {k: ((nan, nan) if k in withheld else v) for k, v in ci.items()}
    return out, out_ci, withheld
