"""Tabular data from a CSV file, split into sites by a column of the data itself.

A natural split: each row names its site (hospital, scanner, source), so the
federation has exactly the sites the data has. Each site's rows are split
into train, validation and test (stratified by label where every class has
more than two rows), and standardised with that site's own training
statistics: no statistic leaves a site.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from flmi.core.errors import DataError
from flmi.data.arrays import ArraySplit, FederatedData, SiteSplits, concat_splits
from flmi.data.heart_disease import flamby_split

log = logging.getLogger("flmi.data")
MISSING = {"", "?", "na", "nan", "null", "none"}


def _read(path: Path) -> tuple[list[str], list[list[str]]]:
    if not path.is_file():
        raise DataError(f"data.path: no such file: {path}; point [data] path at your CSV file")
    try:
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot be read as CSV: {exc}") from None
    if len(rows) < 2:
        raise DataError(f"{path}: needs a header row and at least one data row")
    return [h.strip() for h in rows[0]], rows[1:]


def _column(header: list[str], name: str, key: str, path: Path) -> int:
    if name not in header:
        raise DataError(
            f"data.{key} = '{name}' is not a column of {path}; columns: {', '.join(header)}"
        )
    return header.index(name)


def load_csv_sites(
    *,
    path: Path,
    label_column: str,
    site_column: str,
    feature_columns: Sequence[str],
    split_seed: int,
    test_fraction: float,
    val_fraction: float,
    numeric_label: bool = False,
) -> tuple[FederatedData, list[str]]:
    """Load a CSV and split it into one site per value of ``site_column``.

    Parameters
    ----------
    path
        The CSV file, with a header row.
    label_column
        The class label: integers, or text classes numbered in sorted order.
    site_column
        The column naming each row's site.
    feature_columns
        Numeric feature columns (empty: every column but the label and site).
    split_seed
        Seed of each site's train/validation/test split.
    test_fraction, val_fraction
        Shares of each site's rows held out for test, and of the rest for validation.
    numeric_label
        The label is a number to predict (regression): kept as float32,
        splits drawn at random instead of stratified; no class names.

    Returns
    -------
    tuple[FederatedData, list[str]]
        The sites (named by the column's values) and the class names, in label order.

    Raises
    ------
    DataError
        A missing file or column, a non-numeric feature (naming the column and
        row), or a site left without training or test rows.
    """
    header, rows = _read(path)
    label_at = _column(header, label_column, "label_column", path)
    site_at = _column(header, site_column, "site_column", path)
    names = list(feature_columns) or [h for h in header if h not in (label_column, site_column)]
    feature_at = [_column(header, n, "feature_columns", path) for n in names]
    complete = _complete_rows(
        rows, header=header, columns=(*feature_at, label_at, site_at), path=path
    )
    x = _features(complete, header=header, feature_at=feature_at, path=path)
    raw_labels = [row[label_at].strip() for row in complete]
    classes: list[str] = []
    if numeric_label:
        y = _numeric(raw_labels, column=label_column, path=path)
    else:
        y, classes = _class_labels(raw_labels)
    data = _by_site(
        x=x,
        y=y,
        complete=complete,
        site_at=site_at,
        seed=split_seed,
        test=test_fraction,
        val=val_fraction,
    )
    return data, classes


def _complete_rows(
    rows: list[list[str]], *, header: list[str], columns: Sequence[int], path: Path
) -> list[list[str]]:
    """The rows with every one of ``columns`` filled in; refuses a file with none."""
    complete = [
        r
        for r in rows
        if len(r) == len(header) and all(r[i].strip().lower() not in MISSING for i in columns)
    ]
    dropped = len(rows) - len(complete)
    if dropped:
        log.info("%s: %d rows with a missing value were left out", path.name, dropped)
    if not complete:
        raise DataError(f"{path}: no row has every feature, label and site column filled in")
    return complete


def _features(
    rows: list[list[str]], *, header: list[str], feature_at: Sequence[int], path: Path
) -> np.ndarray:
    """The feature columns of ``rows`` as float64, naming the first value that is no number."""
    x = np.empty((len(rows), len(feature_at)), dtype=np.float64)
    for r, row in enumerate(rows):
        for c, i in enumerate(feature_at):
            try:
                x[r, c] = float(row[i])
            except ValueError:
                raise DataError(
                    f"{path}: column '{header[i]}' holds '{row[i]}', which is not a number; "
                    "encode it as numbers or leave it out of data.feature_columns"
                ) from None
    return x


def _class_labels(raw_labels: list[str]) -> tuple[np.ndarray, list[str]]:
    """Class indices and names: integer labels as they are, text classes in sorted order."""
    classes = sorted(
        set(raw_labels), key=lambda v: (not _is_int(v), int(v) if _is_int(v) else 0, v)
    )
    index = {name: k for k, name in enumerate(classes)}
    y = np.array(
        [int(v) if all(_is_int(c) for c in classes) else index[v] for v in raw_labels],
        dtype=np.int64,
    )
    return y, classes


def _numeric(values: list[str], *, column: str, path: Path) -> np.ndarray:
    """A numeric label column as float32, naming the first value that is not a number."""
    try:
        y = np.array([float(v) for v in values], dtype=np.float64)
    except ValueError:
        bad = next(v for v in values if not _is_float(v))
        raise DataError(
            f"{path}: label column '{column}' holds '{bad}', which is not a number; "
            "a regression label must be numeric"
        ) from None
    if not np.isfinite(y).all():
        raise DataError(f"{path}: label column '{column}' holds an infinite value")
    return y.astype(np.float32)


def _is_float(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _by_site(
    *,
    x: np.ndarray,
    y: np.ndarray,
    complete: list[list[str]],
    site_at: int,
    seed: int,
    test: float,
    val: float,
) -> FederatedData:
    """One site per value of the site column, each split and standardised on its own."""
    site_of = np.array([row[site_at].strip() for row in complete])
    sites: dict[str, SiteSplits] = {}
    for site in sorted(set(site_of)):
        rows_at = np.flatnonzero(site_of == site)
        sites[site] = _site_splits(
            x=x[rows_at], y=y[rows_at], seed=seed, test=test, val=val, site=site
        )
    return FederatedData(sites=sites, central_test=concat_splits([s.test for s in sites.values()]))


def _is_int(value: str) -> bool:
    try:
        int(value)
    except ValueError:
        return False
    return True


def _site_splits(
    *, x: np.ndarray, y: np.ndarray, seed: int, test: float, val: float, site: str
) -> SiteSplits:
    if len(y) < 3 or math.floor((1 - test) * len(y)) < 1:
        raise DataError(f"site '{site}' has {len(y)} complete rows: too few to split")
    # Classes are stratified on; a numeric target is split at random (one stratum).
    strata = y if y.dtype.kind in "iu" else np.zeros(len(y), dtype=np.int64)
    train_idx, test_idx = flamby_split(strata, first_fraction=1 - test, seed=seed)
    train = ArraySplit(x=x[train_idx], y=y[train_idx])
    held = ArraySplit(x=x[:0], y=y[:0])
    if val > 0 and len(train) >= 3:
        keep, out = flamby_split(strata[train_idx], first_fraction=1 - val, seed=seed)
        train, held = train.take(keep), train.take(out)
    mean, std = train.x.mean(axis=0), train.x.std(axis=0)
    std[std == 0] = 1.0

    def scale(split: ArraySplit) -> ArraySplit:
        return ArraySplit(x=((split.x - mean) / std).astype(np.float32), y=split.y)

    return SiteSplits(
        train=scale(train), val=scale(held), test=scale(ArraySplit(x=x[test_idx], y=y[test_idx]))
    )
