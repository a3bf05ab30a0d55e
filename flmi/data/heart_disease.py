"""Fed-Heart-Disease: the UCI Heart Disease files, one hospital each (FLamby protocol).

The protocol (Ogier du Terrail et al., FLamby, NeurIPS 2022):

- four hospitals, one file each: Cleveland, Hungary, Switzerland, Long Beach VA;
- drop slope, ca and thal, then every row with a missing value (``?``);
- the label is ``num > 0`` (heart disease present);
- one-hot cp and restecg, dropping the first level: 13 features;
- a per-hospital train/test split, 66/34, drawn with scikit-learn's
  ``train_test_split`` (seed 43), stratified on the label unless a class has
  two patients or fewer (Switzerland has one healthy patient left), so every
  patient lands on the same side as in FLamby: with five training seeds,
  FedAvg's mean accuracy moved by 8 points between a different random split
  of the same sizes and FLamby's own;
- per-hospital standardisation with that hospital's training statistics.

Features are standardised at each site with that site's own statistics, as a
hospital would: no statistic leaves a site. (FLamby's pooled baseline instead
standardises the pooled training set with pooled statistics; flmi's pooled arm
trains on the sites' own standardised data, the same inputs the federation sees.)
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from flmi.core.errors import DataError
from flmi.data.arrays import ArraySplit, FederatedData, SiteSplits, concat_splits

FILES = {
    "cleveland": ("processed.cleveland.data", "2d91a8ff69cfd9616aa47b59d6f843db"),
    "hungary": ("processed.hungarian.data", "22e96bee155b5973568101c93b3705f6"),
    "switzerland": ("processed.switzerland.data", "9a87f7577310b3917730d06ba9349e20"),
    "va": ("processed.va.data", "4249d03ca7711e84f4444768c9426170"),
}
COLUMNS = 14
KEEP = (0, 1, 3, 4, 5, 7, 8, 9)  # age, sex, trestbps, chol, fbs, thalach, exang, oldpeak
CP, RESTECG, LABEL = 2, 6, 13
CP_LEVELS, RESTECG_LEVELS = (2.0, 3.0, 4.0), (1.0, 2.0)  # first levels (cp 1, restecg 0) dropped
NUM_FEATURES = len(KEEP) + len(CP_LEVELS) + len(RESTECG_LEVELS)


def _read_rows(path: Path) -> np.ndarray:
    """Rows without a missing value in the columns kept, as floats (slope, ca, thal dropped)."""
    if not path.is_file():
        raise DataError(
            f"data.path: no such file: {path}; put the four UCI 'processed.*.data' files "
            "of the Heart Disease data set in that folder"
        )
    rows = []
    used = (*KEEP, CP, RESTECG, LABEL)
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.strip().split(",")
        if len(fields) != COLUMNS:
            raise DataError(f"{path}: line {number} has {len(fields)} fields, expected {COLUMNS}")
        if any(fields[i].strip() == "?" for i in used):
            continue
        try:
            rows.append([float(fields[i]) for i in range(COLUMNS) if i in used or i == LABEL])
        except ValueError:
            raise DataError(f"{path}: line {number} holds a value that is not a number") from None
    if not rows:
        raise DataError(f"{path}: no complete rows")
    return np.asarray(rows, dtype=np.float64)


def _features(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """13 features and the binary label from rows of the used columns (in column order)."""
    used = sorted((*KEEP, CP, RESTECG, LABEL))
    col = {c: i for i, c in enumerate(used)}
    kept = raw[:, [col[c] for c in KEEP]]
    cp = np.stack([raw[:, col[CP]] == level for level in CP_LEVELS], axis=1)
    restecg = np.stack([raw[:, col[RESTECG]] == level for level in RESTECG_LEVELS], axis=1)
    x = np.concatenate([kept, cp, restecg], axis=1)
    y = (raw[:, col[LABEL]] > 0).astype(np.int64)
    return x, y


def flamby_split(
    y: np.ndarray, *, first_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """FLamby's per-hospital split: stratified unless a class has two examples or fewer.

    Returns the sorted indices of the first (training) and second parts.
    """
    from sklearn.model_selection import train_test_split

    levels = np.unique(y)
    stratify = y if len(levels) > 1 and all((y == level).sum() > 2 for level in levels) else None
    first, second = train_test_split(
        np.arange(len(y)),
        train_size=first_fraction,
        test_size=1.0 - first_fraction,
        random_state=seed,
        shuffle=True,
        stratify=stratify,
    )
    return np.sort(first), np.sort(second)


def _standardise(splits: SiteSplits) -> SiteSplits:
    mean = splits.train.x.mean(axis=0)
    std = splits.train.x.std(axis=0)
    std[std == 0] = 1.0

    def scale(split: ArraySplit) -> ArraySplit:
        return ArraySplit(x=((split.x - mean) / std).astype(np.float32), y=split.y)

    return SiteSplits(train=scale(splits.train), val=scale(splits.val), test=scale(splits.test))


def file_md5(path: Path) -> str:
    """MD5 of a file (to compare with the published checksums)."""
    return hashlib.md5(path.read_bytes()).hexdigest()


def load_heart_disease(
    *,
    directory: Path,
    split_seed: int = 43,
    train_fraction: float = 0.66,
    val_fraction: float = 0.0,
) -> FederatedData:
    """The four hospitals of Fed-Heart-Disease, split and standardised per hospital.

    Parameters
    ----------
    directory
        The folder holding the four UCI ``processed.*.data`` files.
    split_seed
        Seed of the per-hospital stratified train/test split (fixed across runs).
    train_fraction
        Share of each hospital's patients in its training split (FLamby: 0.66).
    val_fraction
        Share of each hospital's *training* patients carved out for validation
        (0: no validation split, as in FLamby's protocol).

    Returns
    -------
    FederatedData
        Sites ``cleveland``, ``hungary``, ``switzerland``, ``va``; x has 13
        float32 features, y is 1 when heart disease is present.
    """
    if not directory.is_dir():
        raise DataError(
            f"data.path: no such folder: {directory}; point it at the folder holding the "
            "UCI Heart Disease 'processed.*.data' files"
        )
    sites: dict[str, SiteSplits] = {}
    for site, (filename, _md5) in FILES.items():
        x, y = _features(_read_rows(directory / filename))
        train_idx, test_idx = flamby_split(y, first_fraction=train_fraction, seed=split_seed)
        train = ArraySplit(x=x[train_idx], y=y[train_idx])
        val = ArraySplit(x=x[:0], y=y[:0])
        if val_fraction > 0:
            keep, held = flamby_split(train.y, first_fraction=1 - val_fraction, seed=split_seed)
            train, val = train.take(keep), train.take(held)
        splits = SiteSplits(train=train, val=val, test=ArraySplit(x=x[test_idx], y=y[test_idx]))
        sites[site] = _standardise(splits)
    ordered = dict(sorted(sites.items()))
    return FederatedData(
        sites=ordered, central_test=concat_splits([s.test for s in ordered.values()])
    )
