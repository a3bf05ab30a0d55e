"""Load MedMNIST v2 ``.npz`` files into channels-first float arrays.

A MedMNIST v2 file holds six uint8 arrays: ``train_images``, ``train_labels``,
``val_images``, ``val_labels``, ``test_images`` and ``test_labels``. Images are
``(N, H, W)`` (2D grey), ``(N, H, W, 3)`` (2D RGB) or ``(N, D, H, W)`` (3D);
labels are ``(N, 1)``. Any file of that layout loads by path; nothing is
downloaded here.
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flmi.core.errors import ConfigError, DataError, LabelError
from flmi.core.keys import Split
from flmi.data.arrays import ArraySplit

# Errors numpy and zipfile raise on a file that is not a valid (or a truncated) npz archive.
_READ_ERRORS = (zipfile.BadZipFile, ValueError, OSError, EOFError, zlib.error)

# An RGB image has this many channels in its last axis.
_RGB_CHANNELS = 3

# Grey 2D images are (N, H, W); RGB 2D images and 3D volumes are 4-dimensional.
_GREY_NDIM = 3
_FOUR_NDIM = 4

# MedMNIST labels are (N, 1); a second axis wider than 1 means multi-label.
_LABEL_NDIM = 2


@dataclass(frozen=True)
class MedMNISTSplits:
    """The official train, validation and test splits of one MedMNIST file.

    Parameters
    ----------
    train
        Training split.
    val
        Validation split.
    test
        Test split.
    """

    train: ArraySplit
    val: ArraySplit
    test: ArraySplit


def load_medmnist_npz(*, path: Path) -> MedMNISTSplits:
    """Load a MedMNIST v2 ``.npz`` file.

    Parameters
    ----------
    path
        The ``.npz`` file, e.g. ``breastmnist.npz`` (2D grey), ``dermamnist.npz``
        (2D RGB) or ``organmnist3d.npz`` (3D).

    Returns
    -------
    MedMNISTSplits
        float32 images scaled to ``[0, 1]`` (``x / 255``), channels first:
        grey 2D ``(N, 1, H, W)``, RGB 2D ``(N, 3, H, W)``, 3D ``(N, 1, D, H, W)``;
        int64 labels of shape ``(N,)``. A 4-D image array whose last axis is 3
        is read as RGB, any other 4-D array as 3D volumes.

    Raises
    ------
    DataError
        The file is missing, is not a valid (or is a truncated) npz archive,
        lacks one of the six arrays, holds images that are not uint8 or have
        the wrong number of dimensions, holds a different number of labels
        than images, or holds multi-label labels.
    LabelError
        A label is negative.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"data.path: no such file: {path}; download the MedMNIST .npz or fix [data] path"
        )
    try:
        archive = np.load(path, allow_pickle=False)
    except _READ_ERRORS as exc:
        raise _unreadable(path=path, exc=exc) from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(
            f"{path}: holds a single .npy array, not a MedMNIST .npz archive with "
            "train/val/test images and labels; point [data] path at the MedMNIST .npz file"
        )
    with archive:
        splits = {
            split: _load_split(archive=archive, path=path, split=str(split))
            for split in (Split.TRAIN, Split.VAL, Split.TEST)
        }
    return MedMNISTSplits(train=splits[Split.TRAIN], val=splits[Split.VAL], test=splits[Split.TEST])


def check_labels(*, split: ArraySplit, num_classes: int, where: str) -> None:
    """Check that every label of ``split`` lies in ``0..num_classes-1``.

    Parameters
    ----------
    split
        The examples to check.
    num_classes
        Number of classes the task predicts.
    where
        What the split is, for the message, e.g. ``"medmnist train split"``.

    Raises
    ------
    ConfigError
        ``num_classes`` is below 1.
    LabelError
        A label lies outside ``0..num_classes-1``; the message names ``where``,
        the offending label value and the fix.
    """
    if num_classes < 1:
        raise ConfigError(
            f"task.num_classes: must be at least 1, got {num_classes}; set [task] num_classes"
        )
    if len(split) == 0:
        return
    y = split.y
    lowest = int(y.min())
    highest = int(y.max())
    allowed = f"0..{num_classes - 1}"
    if lowest < 0:
        count = int(np.count_nonzero(y < 0))
        raise LabelError(
            f"{where}: label {lowest} lies outside the classes {allowed} "
            f"({count} negative labels); labels must be class indices starting at 0, "
            "so fix the labels in the data"
        )
    if highest >= num_classes:
        count = int(np.count_nonzero(y >= num_classes))
        raise LabelError(
            f"{where}: label {highest} lies outside the classes {allowed} "
            f"({count} labels >= {num_classes}, [task] num_classes = {num_classes}); "
            f"set [task] num_classes to {highest + 1} or fix the labels"
        )


def _unreadable(*, path: Path, exc: BaseException) -> DataError:
    """Build the error for a file that is not a readable npz archive."""
    return DataError(
        f"{path}: not a valid MedMNIST .npz file or truncated ({type(exc).__name__}: {exc}); "
        "download the file again and check its MD5"
    )


def _read_array(*, archive: np.lib.npyio.NpzFile, path: Path, key: str) -> np.ndarray:
    """Read one array of the archive, turning every read failure into a DataError."""
    if key not in archive.files:
        present = ", ".join(sorted(archive.files)) or "none"
        raise DataError(
            f"{path}: missing array '{key}' (arrays present: {present}); a MedMNIST v2 file "
            "holds train_/val_/test_images and train_/val_/test_labels"
        )
    try:
        return np.asarray(archive[key])
    except _READ_ERRORS as exc:
        raise _unreadable(path=path, exc=exc) from exc


def _load_split(*, archive: np.lib.npyio.NpzFile, path: Path, split: str) -> ArraySplit:
    """Read, check and convert the images and labels of one split."""
    images_key = f"{split}_images"
    labels_key = f"{split}_labels"
    images = _read_array(archive=archive, path=path, key=images_key)
    labels = _read_array(archive=archive, path=path, key=labels_key)
    x = _convert_images(images=images, path=path, key=images_key)
    y = _convert_labels(labels=labels, path=path, key=labels_key)
    if x.shape[0] != y.shape[0]:
        raise DataError(
            f"{path}: '{images_key}' holds {x.shape[0]} images but '{labels_key}' holds "
            f"{y.shape[0]} labels; the file is damaged, download it again"
        )
    return ArraySplit(x=x, y=y)


def _convert_images(*, images: np.ndarray, path: Path, key: str) -> np.ndarray:
    """Turn uint8 images into one channels-first float32 array scaled to ``[0, 1]``.

    The conversion writes straight into the final contiguous array: one float32
    copy, no intermediate full-size arrays.
    """
    if images.dtype != np.uint8:
        raise DataError(
            f"{path}: '{key}' has dtype {images.dtype}, expected uint8 as in MedMNIST v2; "
            "convert the images to uint8 (0..255)"
        )
    if images.ndim == _GREY_NDIM:
        source = images[:, np.newaxis]  # (N, 1, H, W), a view
    elif images.ndim == _FOUR_NDIM and images.shape[-1] == _RGB_CHANNELS:
        source = images.transpose(0, 3, 1, 2)  # (N, 3, H, W), a view
    elif images.ndim == _FOUR_NDIM:
        source = images[:, np.newaxis]  # (N, 1, D, H, W), a view
    else:
        raise DataError(
            f"{path}: '{key}' has shape {images.shape}; expected (N, H, W) grey, "
            "(N, H, W, 3) RGB or (N, D, H, W) 3D images"
        )
    out = np.empty(source.shape, dtype=np.float32)
    np.divide(source, np.float32(255.0), out=out, dtype=np.float32)
    return out


def _convert_labels(*, labels: np.ndarray, path: Path, key: str) -> np.ndarray:
    """Turn ``(N, 1)`` or ``(N,)`` integer labels into int64 ``(N,)``."""
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{path}: '{key}' has dtype {labels.dtype}, expected integer class labels; "
            "store the labels as integers"
        )
    if labels.ndim == _LABEL_NDIM and labels.shape[1] > 1:
        raise DataError(
            f"{path}: '{key}' has shape {labels.shape}: multi-label files are not supported "
            "by the `classification` task yet; use a single-label MedMNIST file"
        )
    if not (labels.ndim == 1 or (labels.ndim == _LABEL_NDIM and labels.shape[1] == 1)):
        raise DataError(f"{path}: '{key}' has shape {labels.shape}; expected (N, 1) or (N,) labels")
    y = labels.reshape(labels.shape[0]).astype(np.int64)
    if y.size and int(y.min()) < 0:
        bad = int(y.min())
        raise LabelError(
            f"{path}: '{key}' holds the negative label {bad}; labels must be class "
            "indices starting at 0, fix the labels in the file"
        )
    return y
