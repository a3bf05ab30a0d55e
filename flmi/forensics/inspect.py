"""Inspecting a recorded round: how far each site's update lies from the others.

Every update is read as the change it makes to the model it was trained
from (a full-weights update less that model; a delta as sent). For each site:
the change's norm, its cosine to the round's aggregate change, and per layer
(tensor) the same two numbers. The aggregate is pulled toward a site that
sends a large update, so each site's cosine to a reference no one site
moves, the coordinate-wise median of the changes, is given too. A site is
flagged when its norm has a robust z-score (Iglewicz and Hoaglin:
``0.6745 (x - median) / MAD``) beyond :data:`OUTLIER_Z` in absolute value.
The cosine's z-score is reported but flags nothing: a few sites' cosines
often lie close together, so a small spread gives large scores, and an honest
site with unusual data may point elsewhere (telling a faulty site from it
needs more than the direction of its update).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from flmi.core.keys import Manifest
from flmi.core.messages import ClientUpdate, UpdateKind
from flmi.core.params import Params
from flmi.forensics.reader import RecordReader

#: Iglewicz and Hoaglin's cut-off for a modified z-score.
OUTLIER_Z = 3.5
#: The modified z-score's constant: the 0.75 quantile of the standard normal.
_Z_SCALE = 0.6745
#: Scales the mean absolute deviation to a standard deviation's size when MAD is 0.
_MEAN_AD_SCALE = 1.253314


def change(update: ClientUpdate, before: Params) -> dict[str, np.ndarray]:
    """``update`` as the change it makes to ``before``, in float64."""
    if update.kind is UpdateKind.DELTA:
        return {k: v.astype(np.float64) for k, v in update.params.items()}
    return {
        k: v.astype(np.float64) - before[k].astype(np.float64) for k, v in update.params.items()
    }


def _norm(tensors: Mapping[str, np.ndarray], names: Sequence[str]) -> float:
    return math.sqrt(sum(float(np.sum(tensors[k] * tensors[k])) for k in names))


def _cosine(
    a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], names: Sequence[str]
) -> float:
    na, nb = _norm(a, names), _norm(b, names)
    if na == 0.0 or nb == 0.0:
        return float("nan")
    return sum(float(np.sum(a[k] * b[k])) for k in names) / (na * nb)


def robust_z(values: Sequence[float]) -> list[float]:
    """Modified z-scores of ``values`` (NaN stays NaN; all 0 when the values do not spread).

    With a median absolute deviation of 0 (more than half the values equal),
    the mean absolute deviation, scaled to a standard deviation, stands in.
    """
    x = np.asarray(values, dtype=np.float64)
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        return [float("nan")] * len(values)
    med = float(np.median(finite))
    mad = float(np.median(np.abs(finite - med)))
    if mad > 0.0:
        z = _Z_SCALE * (x - med) / mad
    else:
        mean_ad = float(np.mean(np.abs(finite - med)))
        z = (x - med) / (_MEAN_AD_SCALE * mean_ad) if mean_ad > 0.0 else np.zeros_like(x)
    return [float(v) for v in z]


@dataclass(frozen=True)
class SiteInspection:
    """One site's update in one round."""

    site: str
    num_examples: int
    weight: float
    norm: float
    cosine: float
    cosine_median: float
    norm_z: float
    cosine_z: float
    layers: Mapping[str, tuple[float, float]]

    @property
    def outlier(self) -> bool:
        """Whether the norm's robust z-score lies beyond :data:`OUTLIER_Z`."""
        return math.isfinite(self.norm_z) and abs(self.norm_z) > OUTLIER_Z


def inspect_round(reader: RecordReader, rnd: int) -> list[SiteInspection]:
    """Every site's update of round ``rnd`` against the round's aggregate change."""
    recorded = reader.read(rnd)
    before = reader.global_params(rnd - 1)
    aggregate = {
        k: v.astype(np.float64) - before[k].astype(np.float64) for k, v in recorded.params.items()
    }
    entries = {e[Manifest.SITE]: e for e in reader.manifest(rnd)[Manifest.UPDATES]}
    changes = [change(u, before) for u in recorded.updates]
    norms = [_norm(c, sorted(c)) for c in changes]
    cosines = [_cosine(c, aggregate, sorted(c)) for c in changes]
    median = {k: np.median(np.stack([c[k] for c in changes]), axis=0) for k in changes[0]}
    to_median = [_cosine(c, median, sorted(c)) for c in changes]
    norm_z, cosine_z = robust_z(norms), robust_z(to_median)
    return [
        SiteInspection(
            site=u.site,
            num_examples=u.num_examples,
            weight=float(entries[u.site][Manifest.WEIGHT]),
            norm=norms[i],
            cosine=cosines[i],
            cosine_median=to_median[i],
            norm_z=norm_z[i],
            cosine_z=cosine_z[i],
            layers={k: (_norm(c, [k]), _cosine(c, aggregate, [k])) for k in sorted(c)},
        )
        for i, (u, c) in enumerate(zip(recorded.updates, changes, strict=True))
    ]


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def inspection_json(rnd: int, sites: Sequence[SiteInspection]) -> dict[str, object]:
    """The machine-readable form of :func:`inspect_round` (NaN written as ``null``)."""
    return {
        Manifest.ROUND: rnd,
        Manifest.SITES: [
            {
                Manifest.SITE: s.site,
                Manifest.NUM_EXAMPLES: s.num_examples,
                Manifest.WEIGHT: s.weight,
                Manifest.NORM: s.norm,
                Manifest.COSINE: _finite(s.cosine),
                Manifest.COSINE_MEDIAN: _finite(s.cosine_median),
                Manifest.NORM_Z: _finite(s.norm_z),
                Manifest.COSINE_Z: _finite(s.cosine_z),
                Manifest.OUTLIER: s.outlier,
                Manifest.LAYERS: {
                    k: {Manifest.NORM: n, Manifest.COSINE: _finite(c)}
                    for k, (n, c) in s.layers.items()
                },
            }
            for s in sites
        ],
    }
