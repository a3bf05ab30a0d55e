"""Fed-TCGA-BRCA: breast-cancer survival over 6 regions, FLamby's protocol and split.

The protocol (Ogier du Terrail et al., FLamby, NeurIPS 2022; data from Liu et
al., Cell 2018):

- ``brca.csv``: one row per patient, ``pid``, 39 clinical features (age and
  one-hot ethnicity, race and AJCC stage, T, N, M), then ``E`` (1: death
  observed) and ``T`` (follow-up, days);
- ``train_test_split.csv``: FLamby's fixed split; ``fold2`` is ``train_k`` or
  ``test_k`` for center ``k``, the patient's region: 0 Northeast, 1 South,
  2 West, 3 Midwest, 4 Europe, 5 Canada (866 train and 222 test patients);
- features are used as they are (FLamby does not standardise them); targets
  are ``[E, T]`` rows.

The patient barcode never leaves this module: sites hold features and targets only.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from flmi.core.errors import DataError
from flmi.data.arrays import ArraySplit, FederatedData, SiteSplits, concat_splits
from flmi.data.heart_disease import flamby_split

DATA_FILE, SPLIT_FILE = "brca.csv", "train_test_split.csv"
REGIONS = ("northeast", "south", "west", "midwest", "europe", "canada")  # FLamby's center ids 0-5
NUM_FEATURES = 39
TARGETS = ("E", "T")


def _rows(path: Path) -> list[list[str]]:
    if not path.is_file():
        raise DataError(
            f"data.path: no such file: {path}; point [data] path at the folder holding "
            f"FLamby's Fed-TCGA-BRCA files {DATA_FILE} and {SPLIT_FILE}"
        )
    try:
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot be read as CSV: {exc}") from None
    if len(rows) < 2:
        raise DataError(f"{path}: needs a header row and at least one data row")
    return rows


def feature_names(directory: Path) -> list[str]:
    """The 39 feature column names, in model input order."""
    return _rows(directory / DATA_FILE)[0][1 : 1 + NUM_FEATURES]


def _table(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{pid: (features, [E, T])}`` from ``brca.csv``, every value checked."""
    rows = _rows(path)
    header = [h.strip() for h in rows[0]]
    width = 1 + NUM_FEATURES + len(TARGETS)
    if len(header) != width or tuple(header[-2:]) != TARGETS or header[0] != "pid":
        raise DataError(
            f"{path}: expected {width} columns 'pid', {NUM_FEATURES} features, 'E', 'T'; "
            f"got {len(header)} columns ending in {header[-2:]}"
        )
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != width:
            raise DataError(f"{path}: line {number} has {len(row)} fields, expected {width}")
        try:
            values = np.array([float(v) for v in row[1:]], dtype=np.float64)
        except ValueError:
            raise DataError(f"{path}: line {number} holds a value that is not a number") from None
        out[row[0].strip()] = (values[:NUM_FEATURES], values[NUM_FEATURES:])
    return out


def load_tcga_brca(
    *, directory: Path, split_seed: int = 43, val_fraction: float = 0.0
) -> FederatedData:
    """The 6 regions of Fed-TCGA-BRCA with FLamby's train/test split.

    Parameters
    ----------
    directory
        The folder holding ``brca.csv`` and ``train_test_split.csv``.
    split_seed
        Seed of the validation split (only with ``val_fraction > 0``).
    val_fraction
        Share of each region's training patients held out for validation,
        stratified on the event (0: none, as in FLamby).

    Returns
    -------
    FederatedData
        Sites named by region; x holds 39 float32 features, y float32
        ``[E, T]`` rows; ``central_test`` is the regions' test splits together.

    Raises
    ------
    DataError
        A missing or malformed file, a split naming a patient absent from the
        data, or an unknown fold.
    """
    if not directory.is_dir():
        raise DataError(
            f"data.path: no such folder: {directory}; point it at the folder holding "
            f"FLamby's Fed-TCGA-BRCA files {DATA_FILE} and {SPLIT_FILE}"
        )
    table = _table(directory / DATA_FILE)
    split_rows = _rows(directory / SPLIT_FILE)
    header = [h.strip() for h in split_rows[0]]
    if "pid" not in header or "fold2" not in header:
        raise DataError(f"{directory / SPLIT_FILE}: needs the columns 'pid' and 'fold2'")
    pid_at, fold_at = header.index("pid"), header.index("fold2")
    members: dict[tuple[str, int], list[str]] = {}
    for number, row in enumerate(split_rows[1:], start=2):
        pid, fold = row[pid_at].strip(), row[fold_at].strip()
        part, _, center = fold.partition("_")
        if part not in ("train", "test") or not center.isdigit() or int(center) >= len(REGIONS):
            raise DataError(
                f"{directory / SPLIT_FILE}: line {number} has fold2 '{fold}'; "
                "expected train_k or test_k with k in 0..5"
            )
        if pid not in table:
            raise DataError(
                f"{directory / SPLIT_FILE}: line {number} names a patient absent from {DATA_FILE}"
            )
        members.setdefault((part, int(center)), []).append(pid)

    def split(pids: list[str]) -> ArraySplit:
        x = np.stack([table[p][0] for p in pids]).astype(np.float32)
        y = np.stack([table[p][1] for p in pids]).astype(np.float32)
        return ArraySplit(x=x, y=y)

    sites: dict[str, SiteSplits] = {}
    for k, region in enumerate(REGIONS):
        if ("train", k) not in members or ("test", k) not in members:
            raise DataError(
                f"{directory / SPLIT_FILE}: center {k} ({region}) has no train or test rows"
            )
        train = split(members[("train", k)])
        val = ArraySplit(x=train.x[:0], y=train.y[:0])
        if val_fraction > 0:
            keep, held = flamby_split(
                train.y[:, 0].astype(np.int64), first_fraction=1 - val_fraction, seed=split_seed
            )
            train, val = train.take(keep), train.take(held)
        sites[region] = SiteSplits(train=train, val=val, test=split(members[("test", k)]))
    ordered = dict(sorted(sites.items()))
    return FederatedData(
        sites=ordered, central_test=concat_splits([s.test for s in ordered.values()])
    )
