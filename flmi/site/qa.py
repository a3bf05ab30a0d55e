"""Federated data QA, the site's half: describe the data in counts, suppress small ones.

Before training, each site summarises what it holds: split sizes, its label
distribution (class counts; for regression a histogram of the target over
edges set by the config; for survival events and censored), a histogram of
image intensities over fixed bins, and the image size. Every count below
``min_count`` is replaced by ``None`` *here, at the site*, before the report
leaves it (small-cell suppression: a count of 1 or 2 can point at a patient).
Zero is not suppressed: "nobody" identifies nobody. Because the split sizes
are reported, one suppressed cell of a distribution could be recovered by
subtraction, so the next smallest cell is suppressed with it (secondary
suppression). Spacing is not known for
in-memory arrays and is not reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from flmi.data.arrays import SiteSplits

INTENSITY_EDGES = tuple(float(v) for v in np.linspace(0.0, 1.0, 21))  # images scaled to [0, 1]
LabelKind = Literal["classes", "histogram", "events", "none"]
Count = int | None


@dataclass(frozen=True)
class DataReport:
    """What one site tells the server about its data: counts only, small ones suppressed.

    Parameters
    ----------
    site
        The site's name.
    counts
        ``{"n_train": .., "n_val": .., "n_test": ..}``.
    label_kind
        ``"classes"`` (keys are class labels), ``"histogram"`` (keys are bin
        indices over ``label_edges``), ``"events"`` (``"event"``, ``"censored"``)
        or ``"none"`` (targets not summarised, e.g. masks).
    labels
        The training split's label distribution.
    label_edges
        Bin edges of a target histogram (empty otherwise).
    intensity
        Training images' pixel counts per bin of :data:`INTENSITY_EDGES`
        (values outside clipped into the end bins); empty for tabular data.
    image_shape
        One example's shape without the batch axis (channels first).
    """

    site: str
    counts: dict[str, Count]
    label_kind: LabelKind
    labels: dict[str, Count]
    label_edges: tuple[float, ...]
    intensity: tuple[Count, ...]
    image_shape: tuple[int, ...]

    def to_json(self) -> dict[str, object]:
        """JSON-ready fields (``None`` marks a suppressed count)."""
        return {
            "counts": dict(self.counts),
            "label_kind": self.label_kind,
            "labels": dict(self.labels),
            "label_edges": list(self.label_edges),
            "intensity": list(self.intensity),
            "intensity_edges": list(INTENSITY_EDGES) if self.intensity else [],
            "image_shape": list(self.image_shape),
        }


def suppress(count: int, *, min_count: int) -> Count:
    """``count`` if it is 0 or at least ``min_count``, else ``None``."""
    return count if count == 0 or count >= min_count else None


def describe_site(
    *,
    site: str,
    data: SiteSplits,
    label_kind: LabelKind,
    min_count: int,
    label_edges: tuple[float, ...] = (),
) -> DataReport:
    """Describe one site's data and suppress every count below ``min_count`` (runs at the site).

    Parameters
    ----------
    site
        The site's name.
    data
        Its splits.
    label_kind
        How targets are summarised (see :class:`DataReport`).
    min_count
        Smallest count reported; smaller non-zero counts become ``None``.
    label_edges
        Histogram edges for ``label_kind = "histogram"``.
    """

    def hide(n: int) -> Count:
        return suppress(int(n), min_count=min_count)

    train = data.train
    y = train.y
    labels: dict[str, int]
    if label_kind == "classes":
        labels = train.label_counts()
    elif label_kind == "none":
        labels = {}
    elif label_kind == "events":
        events = int((y[:, 0] == 1).sum()) if len(train) else 0
        labels = {"event": events, "censored": len(train) - events}
    else:
        inner = np.clip(y.astype(np.float64), label_edges[0], label_edges[-1])
        hist, _ = np.histogram(inner, bins=np.asarray(label_edges))
        labels = {str(i): int(c) for i, c in enumerate(hist)}
    hidden_labels = with_secondary({k: hide(v) for k, v in labels.items()}, labels)
    intensity: tuple[Count, ...] = ()
    # Every training image, labeled or not: an unlabeled site's scanner shows too.
    images = [x for x in (train.x, data.unlabeled) if x is not None and x.ndim >= 3 and len(x)]
    if images:
        edges = np.asarray(INTENSITY_EDGES)
        hist = np.zeros(len(edges) - 1, dtype=np.int64)
        for x in images:
            hist += np.histogram(np.clip(x.astype(np.float64).ravel(), 0.0, 1.0), bins=edges)[0]
        raw = {str(i): int(c) for i, c in enumerate(hist)}
        cells = with_secondary({k: hide(v) for k, v in raw.items()}, raw)
        intensity = tuple(cells[str(i)] for i in range(len(hist)))
    return DataReport(
        site=site,
        counts={
            "n_train": hide(len(data.train)),
            "n_val": hide(len(data.val)),
            "n_test": hide(len(data.test)),
        },
        label_kind=label_kind,
        labels=hidden_labels,
        label_edges=tuple(label_edges) if label_kind == "histogram" else (),
        intensity=intensity,
        image_shape=tuple(int(v) for v in train.x.shape[1:]),
    )


def with_secondary(hidden: dict[str, Count], raw: dict[str, int]) -> dict[str, Count]:
    """Suppress the smallest remaining non-zero cell when exactly one was suppressed."""
    if sum(v is None for v in hidden.values()) != 1:
        return hidden
    shown = [k for k, v in hidden.items() if v]
    if not shown:
        return hidden
    smallest = min(shown, key=lambda k: (raw[k], k))
    return {**hidden, smallest: None}
