"""In-memory data containers shared by loaders, partitioners and tasks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from flmi.core.errors import DataError


@dataclass(frozen=True)
class ArraySplit:
    """Inputs and targets of one split.

    Parameters
    ----------
    x
        float32 images, channels first: ``(N, C, H, W)`` or ``(N, C, D, H, W)``,
        intensities scaled to roughly ``[0, 1]``; or feature vectors ``(N, F)``.
    y
        The task's targets, one row per example: int64 class labels ``(N,)``
        (classification), multi-label indicators ``(N, L)`` (1: label present),
        segmentation masks ``(N, *spatial)`` of class indices, float targets
        ``(N,)`` (regression) or ``(N, 2)`` (survival: ``[event, time]`` per patient).
    """

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise DataError(
                f"images and labels differ in length: {self.x.shape[0]} images, "
                f"{self.y.shape[0]} labels"
            )
        if self.y.ndim < 1:
            raise DataError(
                f"targets must have one row per example (shape (N, ...)); got {self.y.shape}"
            )

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def take(self, index: np.ndarray) -> ArraySplit:
        """Return the examples at ``index`` (a copy)."""
        return ArraySplit(x=self.x[index], y=self.y[index])

    def label_counts(self) -> dict[str, int]:
        """Count examples per label, keyed by the label as a string (JSON-ready).

        Class labels: examples of each class. Multi-label indicators: examples
        with each label present. Masks: examples in which each class occurs.
        """
        if self.y.ndim == 2:
            positives = (self.y > 0).sum(axis=0)
            return {str(k): int(c) for k, c in enumerate(positives)}
        if self.y.ndim > 2:
            flat = self.y.reshape(self.y.shape[0], -1)
            values = np.unique(flat)
            return {str(int(v)): int((flat == v).any(axis=1).sum()) for v in values}
        values, counts = np.unique(self.y, return_counts=True)
        return {str(int(v)): int(c) for v, c in zip(values, counts, strict=True)}


@dataclass(frozen=True)
class SiteSplits:
    """The train, validation and test splits one site holds.

    ``unlabeled`` holds training images that have no labels at all (a
    semi-supervised site): images only, ``(M, C, ...)`` like ``train.x``;
    ``None`` when the site has none.
    """

    train: ArraySplit
    val: ArraySplit
    test: ArraySplit
    unlabeled: np.ndarray | None = None

    @property
    def num_unlabeled(self) -> int:
        """How many unlabeled training images the site holds."""
        return 0 if self.unlabeled is None else int(self.unlabeled.shape[0])


@dataclass(frozen=True)
class FederatedData:
    """Every site's private splits, plus the central test set of a simulation.

    ``central_test`` exists only in simulation; a deployment has none.
    ``unreadable`` counts the files each site left out, per reason code
    (``"all"`` for one collection split into simulated sites): counts and
    codes only, never file names.
    """

    sites: Mapping[str, SiteSplits]
    central_test: ArraySplit
    unreadable: Mapping[str, Mapping[str, int]] = field(default_factory=dict)


def concat_splits(splits: list[ArraySplit]) -> ArraySplit:
    """Concatenate splits in the given order."""
    if not splits:
        raise DataError("nothing to concatenate: no splits given")
    return ArraySplit(
        x=np.concatenate([s.x for s in splits]), y=np.concatenate([s.y for s in splits])
    )
