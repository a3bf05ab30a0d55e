"""A manifest: a CSV that lists each patient's image file, its label or mask, and its site.

Columns (names set in ``[data]``): ``image_column`` (a PNG, JPEG, DICOM or
NIfTI file, or a folder holding one DICOM series; relative paths are taken
from the CSV's folder), ``label_column`` (a class: integers, or text classes
numbered in sorted order) or ``mask_column`` (a mask image, for
segmentation), an optional ``site_column`` (the natural split: one site per
value) and an optional ``split_column`` (``train``, ``val`` or ``test``).
Every image goes through the ``[data.transforms]`` pipeline; all must end up
the same shape.

An image that cannot be read stops the load (``on_unreadable = "error"``,
the message names the file and row) or is left out (``"skip"``): its path
goes to the site's own log, and only a code and a count per site are kept for
anything that leaves the site.
"""

from __future__ import annotations

import csv
import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from flmi.core.errors import DataError
from flmi.core.keys import Split
from flmi.core.rng import generator
from flmi.data.arrays import ArraySplit, FederatedData, SiteSplits, concat_splits
from flmi.data.heart_disease import flamby_split
from flmi.data.partition import partition_indices
from flmi.data.readers import UnreadableCode, UnreadableImage, read_image, site_log
from flmi.data.transforms import ImagePipeline

if TYPE_CHECKING:
    from flmi.config import TransformsConfig

SPLITS = (Split.TRAIN, Split.VAL, Split.TEST)
DEFAULT_SITE = "site_1"


@dataclass(frozen=True)
class ManifestRow:
    """One row of a manifest, paths resolved.

    Parameters
    ----------
    row
        The row's number in the CSV file (the header is row 1).
    image
        The image file or DICOM series folder.
    label
        The class as written (``""`` when the manifest has no label column).
    mask
        The mask file (``None`` when the manifest has no mask column).
    site
        The site (``""`` without a site column).
    split
        ``train``, ``val`` or ``test`` (``""`` without a split column).
    """

    row: int
    image: Path
    label: str = ""
    mask: Path | None = None
    site: str = ""
    split: str = ""


@dataclass(frozen=True)
class LoadedManifest:
    """The readable rows of a manifest, through the pipeline.

    Parameters
    ----------
    images
        float32 ``(N, C, *spatial)``.
    labels
        int64 ``(N,)`` class indices, or ``None`` without a label column.
    masks
        int64 ``(N, 1, *spatial)``, or ``None`` without a mask column.
    sites
        ``(N,)`` site names (``site_1`` for all rows without a site column).
    splits
        ``(N,)`` ``train``/``val``/``test``, or ``None`` without a split column.
    classes
        The class names in label order.
    unlabeled
        ``(N,)`` True where the row has no label (``data.empty_labels =
        "unlabeled"``; its entry in ``labels`` is -1), or ``None`` when every
        row has one.
    unreadable
        Per site, the number of files left out per :class:`UnreadableCode`:
        what may leave the site about them.
    """

    images: np.ndarray
    labels: np.ndarray | None
    masks: np.ndarray | None
    sites: np.ndarray
    splits: np.ndarray | None
    classes: list[str]
    unreadable: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    unlabeled: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def rows(self, index: np.ndarray) -> LoadedManifest:
        """The manifest restricted to the rows at ``index`` (copies), counts kept."""
        return LoadedManifest(
            images=self.images[index],
            labels=None if self.labels is None else self.labels[index],
            masks=None if self.masks is None else self.masks[index],
            sites=self.sites[index],
            splits=None if self.splits is None else self.splits[index],
            classes=self.classes,
            unreadable=self.unreadable,
            unlabeled=None if self.unlabeled is None else self.unlabeled[index],
        )


def read_manifest(
    *,
    path: Path,
    image_column: str,
    label_column: str = "",
    mask_column: str = "",
    site_column: str = "",
    split_column: str = "",
    allow_empty_labels: bool = False,
) -> list[ManifestRow]:
    """Read and check a manifest CSV; nothing is loaded yet.

    With ``allow_empty_labels`` an empty label cell is allowed and the row is
    an unlabeled training image (its ``label`` is ``""``).

    Raises
    ------
    DataError
        The file is missing or not CSV, a named column is absent, a cell of a
        named column is empty (the label cell only without
        ``allow_empty_labels``), an unlabeled row is put in a validation or
        test split, or a split is not ``train``/``val``/``test``; the message
        names the file, the column and the row.
    """
    header, table = _read_table(path)
    columns = {
        "image_column": image_column,
        "label_column": label_column,
        "mask_column": mask_column,
        "site_column": site_column,
        "split_column": split_column,
    }
    at = _column_positions(header, columns=columns, path=path)
    rows: list[ManifestRow] = []
    for number, cells in enumerate(table, start=2):
        if not any(c.strip() for c in cells):
            continue  # a blank line
        values = _row_values(
            cells,
            number=number,
            header=header,
            at=at,
            columns=columns,
            path=path,
            allow_empty_labels=allow_empty_labels,
        )
        split = _row_split(values, number=number, columns=columns, path=path)
        rows.append(
            ManifestRow(
                row=number,
                image=path.parent / values["image_column"],
                label=values.get("label_column", ""),
                mask=path.parent / values["mask_column"] if mask_column else None,
                site=values.get("site_column", ""),
                split=split,
            )
        )
    if not rows:
        raise DataError(f"{path}: no data rows")
    return rows


def _read_table(path: Path) -> tuple[list[str], list[list[str]]]:
    """The manifest's stripped header and its data rows, as CSV cells."""
    if not path.is_file():
        raise DataError(f"data.path: no such file: {path}; point [data] path at the manifest CSV")
    try:
        with path.open(newline="") as handle:
            table = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot be read as CSV: {exc}") from None
    if len(table) < 2:
        raise DataError(f"{path}: needs a header row and at least one data row")
    return [h.strip() for h in table[0]], table[1:]


def _column_positions(
    header: list[str], *, columns: Mapping[str, str], path: Path
) -> dict[str, int]:
    """Where each named column is in ``header`` (unnamed ones left out)."""
    at: dict[str, int] = {}
    for key, name in columns.items():
        if not name:
            continue
        if name not in header:
            raise DataError(
                f"data.{key} = '{name}' is not a column of {path}; columns: {', '.join(header)}"
            )
        at[key] = header.index(name)
    return at


def _row_values(
    cells: list[str],
    *,
    number: int,
    header: list[str],
    at: Mapping[str, int],
    columns: Mapping[str, str],
    path: Path,
    allow_empty_labels: bool,
) -> dict[str, str]:
    """The stripped cells of the named columns of row ``number``; none may be empty."""
    if len(cells) != len(header):
        raise DataError(
            f"{path}, row {number}: {len(cells)} cells, but the header has {len(header)}"
        )
    values = {key: cells[i].strip() for key, i in at.items()}
    for key, value in values.items():
        if not value and not (allow_empty_labels and key == "label_column"):
            raise DataError(
                f"{path}, row {number}: column '{columns[key]}' is empty; fill it in "
                "or remove the row"
                + (
                    " (or set data.empty_labels = 'unlabeled' to train on unlabeled images)"
                    if key == "label_column"
                    else ""
                )
            )
    return values


def _row_split(
    values: Mapping[str, str], *, number: int, columns: Mapping[str, str], path: Path
) -> str:
    """Row ``number``'s split (``""`` without a split column); only train may be unlabeled."""
    split_column, label_column = columns["split_column"], columns["label_column"]
    split = values.get("split_column", "").lower()
    if split_column and split not in SPLITS:
        raise DataError(
            f"{path}, row {number}: column '{split_column}' holds '{values['split_column']}'; "
            "use train, val or test"
        )
    if label_column and not values["label_column"] and split not in ("", Split.TRAIN):
        raise DataError(
            f"{path}, row {number}: an image without a label cannot be in the '{split}' "
            "split, which scores the model against labels; label it or put it in train"
        )
    return split


def load_manifest(
    *,
    path: Path,
    image_column: str,
    transforms: TransformsConfig,
    label_column: str = "",
    mask_column: str = "",
    site_column: str = "",
    split_column: str = "",
    on_unreadable: str = "error",
    empty_labels: str = "error",
) -> LoadedManifest:
    """Read every image (and mask) of a manifest through the pipeline.

    Parameters
    ----------
    path
        The manifest CSV.
    image_column, label_column, mask_column, site_column, split_column
        Column names (``""``: no such column), as in ``[data]``.
    transforms
        The ``[data.transforms]`` pipeline.
    on_unreadable
        ``"error"``: an unreadable image or mask stops the load;
        ``"skip"``: its row is left out, its path logged at the site, its code counted.
    empty_labels
        ``"error"``: an empty label cell is an error; ``"unlabeled"``: the
        row is an unlabeled training image.

    Returns
    -------
    LoadedManifest
        Rows in manifest order.

    Raises
    ------
    DataError
        A bad manifest (see :func:`read_manifest`); an unreadable file with
        ``on_unreadable = "error"`` (naming the file and row, and the setting
        that skips it); images of different shapes after the pipeline (naming
        both shapes and ``data.transforms.spatial_size``); or no readable row.
    """
    rows = read_manifest(
        path=path,
        image_column=image_column,
        label_column=label_column,
        mask_column=mask_column,
        site_column=site_column,
        split_column=split_column,
        allow_empty_labels=empty_labels == "unlabeled",
    )
    read = _read_rows(rows, path=path, transforms=transforms, on_unreadable=on_unreadable)
    kept, images, masks, unreadable = read.kept, read.images, read.masks, read.unreadable
    _check_all_shapes(images, masks, kept, path=path)
    labels, classes, unlabeled = _row_labels(kept, labeled=bool(label_column))
    return LoadedManifest(
        images=np.stack(images),
        labels=labels,
        masks=np.stack(masks) if masks else None,
        sites=np.array([r.site or DEFAULT_SITE for r in kept]),
        splits=np.array([r.split for r in kept]) if split_column else None,
        classes=classes,
        unreadable={site: dict(sorted(c.items())) for site, c in sorted(unreadable.items())},
        unlabeled=unlabeled if unlabeled is not None and unlabeled.any() else None,
    )


@dataclass(frozen=True)
class _ReadRows:
    """The rows whose files could be read, their arrays, and per site what was left out."""

    kept: list[ManifestRow]
    images: list[np.ndarray]
    masks: list[np.ndarray]
    unreadable: dict[str, Counter[str]]


def _read_rows(
    rows: list[ManifestRow], *, path: Path, transforms: TransformsConfig, on_unreadable: str
) -> _ReadRows:
    """Read every row's image (and mask) through the pipeline, skipping or refusing bad files."""
    image_pipeline = ImagePipeline(spec=transforms)
    mask_pipeline = ImagePipeline(spec=transforms, mask=True)
    kept: list[ManifestRow] = []
    images: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    unreadable: dict[str, Counter[str]] = {r.site or DEFAULT_SITE: Counter() for r in rows}
    for row in rows:
        site = row.site or DEFAULT_SITE
        where = f"{path}, row {row.row}"
        try:
            image = _load(row.image, image_pipeline, where=where, site=site, counts=unreadable)
            mask = (
                _load(row.mask, mask_pipeline, where=where, site=site, counts=unreadable)
                if row.mask is not None
                else None
            )
        except UnreadableImage as exc:
            if on_unreadable != "skip":
                raise DataError(
                    f"{where}: cannot read the image ({exc.code}): {exc.detail}; fix or remove "
                    "the file, or set data.on_unreadable = 'skip' to leave such rows out"
                ) from None
            site_log.warning("site %s: left out %s (%s): %s", site, where, exc.code, exc.detail)
            unreadable[site][exc.code] += 1
            continue
        kept.append(row)
        images.append(image)
        if mask is not None:
            masks.append(mask)
    if not kept:
        raise DataError(
            f"{path}: none of the {len(rows)} images could be read; see the site log for "
            "each file and why"
        )
    return _ReadRows(kept=kept, images=images, masks=masks, unreadable=unreadable)


def _check_all_shapes(
    images: list[np.ndarray], masks: list[np.ndarray], kept: list[ManifestRow], *, path: Path
) -> None:
    """One shape for every image, one for every mask, and each mask the shape of its image."""
    _check_shapes(images, kept, path=path, what="image")
    if masks:
        _check_shapes(masks, kept, path=path, what="mask")
        for image, mask, row in zip(images, masks, kept, strict=True):
            if image.shape[1:] != mask.shape[1:]:
                raise DataError(
                    f"{path}, row {row.row}: the mask's shape {mask.shape[1:]} differs from the "
                    f"image's {image.shape[1:]}; set data.transforms.spatial_size"
                )


def _row_labels(
    kept: list[ManifestRow], *, labeled: bool
) -> tuple[np.ndarray | None, list[str], np.ndarray | None]:
    """``(labels, classes, unlabeled)``: class indices (-1 for an unlabeled row) and names.

    All ``None`` (and no classes) without a label column.
    """
    unlabeled = np.array([not r.label for r in kept]) if labeled else None
    labels: np.ndarray | None = None
    classes: list[str] = []
    if unlabeled is not None:
        labels = np.full(len(kept), -1, dtype=np.int64)
        if not unlabeled.all():
            labels[~unlabeled], classes = _labels([r.label for r in kept if r.label])
    return labels, classes, unlabeled


def _load(
    path: Path,
    pipeline: ImagePipeline,
    *,
    where: str,
    site: str,
    counts: dict[str, Counter[str]],
) -> np.ndarray:
    """Read one image and run the pipeline; stray files of a series folder are counted."""
    image, stray = read_image(path)
    for other in stray:
        site_log.warning(
            "site %s: %s: left %s out of the series (%s)",
            site,
            where,
            other,
            UnreadableCode.NOT_DICOM,
        )
        counts[site][UnreadableCode.NOT_DICOM] += 1
    return pipeline(image, where=where)


def _check_shapes(
    arrays: Sequence[np.ndarray], rows: Sequence[ManifestRow], *, path: Path, what: str
) -> None:
    first = arrays[0].shape
    for array, row in zip(arrays, rows, strict=True):
        if array.shape != first:
            raise DataError(
                f"{path}: the {what} of row {row.row} has shape {array.shape} after the pipeline, "
                f"the first has {first}; set data.transforms.spatial_size (and channels) so "
                "every image ends up the same size"
            )


def _labels(raw: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Integer labels as given; text labels numbered in sorted order."""

    def is_int(value: str) -> bool:
        try:
            int(value)
        except ValueError:
            return False
        return True

    if all(is_int(v) for v in raw):
        y = np.array([int(v) for v in raw], dtype=np.int64)
        return y, [str(v) for v in sorted(set(y.tolist()))]
    classes = sorted(set(raw))
    index = {name: k for k, name in enumerate(classes)}
    return np.array([index[v] for v in raw], dtype=np.int64), classes


def split_manifest(
    *,
    loaded: LoadedManifest,
    split_seed: int,
    test_fraction: float,
    val_fraction: float,
) -> dict[str, dict[str, np.ndarray]]:
    """Each site's train, validation and test row indices.

    With a split column, rows go where it says. Otherwise each site's rows are
    split with ``split_seed`` (stratified by label where every class has more
    than two rows): ``test_fraction`` for test, then ``val_fraction`` of the
    rest for validation.

    Returns
    -------
    dict[str, dict[str, np.ndarray]]
        ``{site: {"train": idx, "val": idx, "test": idx}}``, sorted int64 indices into ``loaded``.
    """
    out: dict[str, dict[str, np.ndarray]] = {}
    for site in sorted(set(loaded.sites.tolist())):
        rows = np.flatnonzero(loaded.sites == site)
        if loaded.splits is not None:
            out[site] = {s: rows[loaded.splits[rows] == s] for s in SPLITS}
            continue
        y = loaded.labels[rows] if loaded.labels is not None else np.zeros(len(rows), np.int64)
        if len(rows) < 2:
            raise DataError(
                f"site '{site}' has {len(rows)} readable image(s): too few to split into "
                "training and test; add images or give the manifest a split column"
            )
        train, test = flamby_split(y, first_fraction=1.0 - test_fraction, seed=split_seed)
        val = np.empty(0, dtype=np.int64)
        if val_fraction > 0 and len(train) >= 2:
            keep, held = flamby_split(y[train], first_fraction=1.0 - val_fraction, seed=split_seed)
            train, val = train[keep], train[held]
        out[site] = {
            Split.TRAIN: np.sort(rows[train]),
            Split.VAL: np.sort(rows[val]),
            Split.TEST: np.sort(rows[test]),
        }
    return out


def manifest_federated_data(
    *,
    loaded: LoadedManifest,
    split_seed: int,
    test_fraction: float,
    val_fraction: float,
    method: str,
    num_sites: int,
    seed: int,
    alpha: float,
) -> FederatedData:
    """Classification data from a manifest with labels.

    With ``method = "natural"`` the sites are the manifest's site column;
    otherwise the whole manifest is split into train/validation/test and then
    partitioned into ``num_sites`` simulated sites (``"iid"``, ``"dirichlet"``
    or ``"quantity"``, as for MedMNIST). ``central_test`` is every site's test
    split. Each site's unreadable-file counts are carried along.

    Rows without a label (``data.empty_labels = "unlabeled"``) become the
    unlabeled training images of their site; without a site column they are
    spread over the simulated sites in near-equal seeded shares. A site none
    of whose rows has a label gets empty train, validation and test splits:
    it trains on its images and is scored nowhere.

    Raises
    ------
    DataError
        The manifest has no label column.
    """
    if loaded.labels is None:
        raise DataError("the manifest has no label column: classification needs data.label_column")
    pool: LoadedManifest | None = None
    if loaded.unlabeled is not None:
        pool = loaded.rows(np.flatnonzero(loaded.unlabeled))
        loaded = loaded.rows(np.flatnonzero(~loaded.unlabeled))
    natural = method == "natural"
    if len(loaded):
        sites = _labeled_sites(
            loaded,
            split_seed=split_seed,
            test_fraction=test_fraction,
            val_fraction=val_fraction,
            method=method,
            num_sites=num_sites,
            seed=seed,
            alpha=alpha,
        )
    else:  # nothing labeled (a hospital's own unannotated files): no split to make
        assert pool is not None
        names = sorted(set(pool.sites.tolist())) if natural else _site_names(num_sites)
        sites = {name: _unscored(pool) for name in names}
    if pool is not None:
        sites = _with_unlabeled(sites, pool=pool, natural=natural, seed=seed)
    if natural:
        unreadable = dict(loaded.unreadable)
    else:
        total = Counter[str]()
        for counts in loaded.unreadable.values():
            total.update(counts)
        # One collection split into simulated sites: the counts belong to the whole of it.
        unreadable = {"all": dict(sorted(total.items()))}
    return FederatedData(
        sites=sites,
        central_test=concat_splits([s.test for _, s in sorted(sites.items())]),
        unreadable=unreadable,
    )


def _site_names(num_sites: int) -> list[str]:
    return [f"site_{k + 1}" for k in range(num_sites)]


def _labeled_sites(
    loaded: LoadedManifest,
    *,
    split_seed: int,
    test_fraction: float,
    val_fraction: float,
    method: str,
    num_sites: int,
    seed: int,
    alpha: float,
) -> dict[str, SiteSplits]:
    """The labeled rows split into train/val/test per site, then into simulated sites."""
    split = split_manifest(
        loaded=loaded,
        split_seed=split_seed,
        test_fraction=test_fraction,
        val_fraction=val_fraction,
    )
    labels = loaded.labels
    assert labels is not None  # rows() keeps the label column

    def take(index: Mapping[str, np.ndarray]) -> SiteSplits:
        train, val, test = (
            ArraySplit(x=loaded.images[index[s]], y=labels[index[s]]) for s in SPLITS
        )
        return SiteSplits(train=train, val=val, test=test)

    if method == "natural":
        return {site: take(idx) for site, idx in split.items()}
    (whole,) = split.values()
    parts = partition_indices(
        labels=[labels[whole[s]] for s in SPLITS],
        method=method,
        num_sites=num_sites,
        seed=seed,
        alpha=alpha,
    )
    return {
        name: take({s: whole[s][parts[i][k]] for i, s in enumerate(SPLITS)})
        for k, name in enumerate(_site_names(num_sites))
    }


def _unscored(pool: LoadedManifest) -> SiteSplits:
    """Empty train, validation and test splits shaped like ``pool``'s images."""
    none = ArraySplit(x=np.zeros((0, *pool.images.shape[1:]), np.float32), y=np.zeros(0, np.int64))
    return SiteSplits(train=none, val=none, test=none)


def _with_unlabeled(
    sites: dict[str, SiteSplits], *, pool: LoadedManifest, natural: bool, seed: int
) -> dict[str, SiteSplits]:
    """Give each site its unlabeled images: its own rows, or a seeded share of the collection."""
    if natural:
        parts = {site: np.flatnonzero(pool.sites == site) for site in sorted(set(pool.sites))}
        # A site that labeled nothing trains on its images and is scored nowhere.
        sites = {name: sites.get(name) or _unscored(pool) for name in sorted({*sites, *parts})}
    else:
        order = generator(seed=seed, party="manifest", rnd=0, purpose="unlabeled").permutation(
            len(pool)
        )
        names = sorted(sites, key=lambda name: int(name.rsplit("_", 1)[1]))
        parts = {
            name: np.sort(share)
            for name, share in zip(names, np.array_split(order, len(names)), strict=True)
        }
    return {
        name: dataclasses.replace(splits, unlabeled=pool.images[parts[name]])
        if name in parts and parts[name].size
        else splits
        for name, splits in sites.items()
    }
