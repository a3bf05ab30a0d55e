"""Federated data QA, the server's half: which sites look unlike the others.

For each site and each distribution it reported, the server compares the
site with all the *other* sites pooled (suppressed counts read as 0):

- **labels** (classes, or events and censored): total-variation distance,
  half the sum of absolute differences of the proportions, so 0.2 means
  20 % of the patients would have to change label to match;
- **target histogram** (regression) and **intensity histogram** (images):
  the earth mover's (Wasserstein-1) distance between the two histograms, in
  units of the histogram's range, so 0.2 means intensities sit a fifth of
  the range apart on average (a scanner or preprocessing shift).

Every distance lies in ``[0, 1]``. A site's score is its largest distance;
it is flagged when the score exceeds ``flag_distance`` (default 0.25). It is a
screening signal (a scanner set up differently, labels coded the other way
round, a unit error), not a verdict: generated hospitals, whose scanners
differ on purpose, score up to about 0.2 on intensity.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from flmi.site.qa import Count, DataReport


def _vector(counts: Sequence[Count]) -> np.ndarray:
    return np.asarray([0 if c is None else c for c in counts], dtype=np.float64)


def tv_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Total-variation distance of two count vectors' proportions (NaN if one is empty)."""
    if p.sum() <= 0 or q.sum() <= 0:
        return float("nan")
    return float(np.abs(p / p.sum() - q / q.sum()).sum() / 2)


def emd_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Earth mover's distance of two histograms on equal bins, in units of their range."""
    if p.sum() <= 0 or q.sum() <= 0 or p.size == 0:
        return float("nan")
    gap = np.cumsum(p / p.sum()) - np.cumsum(q / q.sum())
    return float(np.abs(gap).sum() / p.size)


def _distances(
    report: DataReport, others: Sequence[DataReport], keys: Sequence[str]
) -> dict[str, float]:
    own = _vector([report.labels.get(k, 0) for k in keys])
    rest = sum((_vector([o.labels.get(k, 0) for k in keys]) for o in others), np.zeros(len(keys)))
    if report.label_kind == "histogram":
        order = sorted(keys, key=int)
        own = _vector([report.labels.get(k, 0) for k in order])
        rest = sum(
            (_vector([o.labels.get(k, 0) for k in order]) for o in others), np.zeros(len(order))
        )
        out = {"labels": emd_distance(own, rest)}
    else:
        out = {"labels": tv_distance(own, rest)}
    # Against the other sites that sent a histogram (a tabular or empty site sends none).
    imaged = [o for o in others if o.intensity]
    if report.intensity and imaged:
        own_i = _vector(report.intensity)
        rest_i = sum((_vector(o.intensity) for o in imaged), np.zeros(own_i.size))
        out["intensity"] = emd_distance(own_i, rest_i)
    return out


def data_section(
    reports: Mapping[str, DataReport], *, min_count: int, flag_distance: float
) -> dict[str, object]:
    """The run's ``data`` section: every site's report, its distances and flags.

    Returns
    -------
    dict[str, object]
        ``{"min_count", "flag_distance", "flagged": [site, ...], "sites": {site:
        {...report, "distance": {"labels": d, "intensity": d}, "score": s,
        "flagged": bool}}}``; a distance that cannot be computed is ``None``.
    """
    names = sorted(reports)
    keys = sorted({k for r in reports.values() for k in r.labels})
    sites: dict[str, object] = {}
    flagged: list[str] = []
    for name in names:
        others = [reports[o] for o in names if o != name]
        distances = _distances(reports[name], others, keys) if others else {}
        defined = [d for d in distances.values() if not np.isnan(d)]
        score = max(defined) if defined else None
        is_flagged = score is not None and score > flag_distance
        if is_flagged:
            flagged.append(name)
        sites[name] = {
            **reports[name].to_json(),
            "distance": {k: None if np.isnan(v) else round(v, 6) for k, v in distances.items()},
            "score": None if score is None else round(score, 6),
            "flagged": is_flagged,
        }
    return {
        "min_count": min_count,
        "flag_distance": flag_distance,
        "flagged": flagged,
        "sites": sites,
    }
