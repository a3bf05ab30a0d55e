"""Images to score with a trained model: ``.npz`` arrays, PNG and JPEG, preprocessed as in training.

The preprocessing is MedMNIST's: channels first, ``uint8`` intensities divided
by 255 (``uint16`` by 65535); floating-point arrays are taken as already
scaled. Nothing is resized: an image of another size than the model was
trained on is an error that names the file. (A tabular run standardised each
site's features with that site's own statistics, which never left it: give
feature vectors standardised the same way.)
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flmi.core.errors import DataError
from flmi.core.keys import Split

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SUFFIXES = (".npz", *IMAGE_SUFFIXES)
_RGB = 3


@dataclass(frozen=True)
class ImageBatch:
    """Preprocessed images from one file (or one split of a MedMNIST ``.npz``).

    Parameters
    ----------
    source
        The file the images came from.
    split
        The MedMNIST split (``"train"``, ``"val"``, ``"test"``), or ``""``.
    x
        float32 images, channels first, ``(N, *input_shape)``.
    labels
        The labels stored beside the images (MedMNIST ``.npz``), or ``None``.
    """

    source: Path
    split: str
    x: np.ndarray
    labels: np.ndarray | None


def _scale(array: np.ndarray, where: str) -> np.ndarray:
    if array.dtype == np.uint8:
        out = np.empty(array.shape, dtype=np.float32)
        np.divide(array, np.float32(255.0), out=out, dtype=np.float32)
        return out
    if array.dtype == np.uint16:
        return (array.astype(np.float32) / np.float32(65535.0)).astype(np.float32)
    if np.issubdtype(array.dtype, np.floating):
        return np.ascontiguousarray(array, dtype=np.float32)
    raise DataError(
        f"{where}: images of dtype {array.dtype} are not supported; store uint8 (0..255), "
        "uint16 or floating-point intensities scaled to [0, 1]"
    )


def to_model_input(array: np.ndarray, *, input_shape: Sequence[int], where: str) -> np.ndarray:
    """One image or a stack of images as ``(N, *input_shape)`` float32, channels first.

    Accepted layouts, for ``input_shape = (C, *spatial)``: ``spatial`` (grey),
    ``(*spatial, C)`` (channels last), ``(C, *spatial)``, and each of these with
    a leading batch axis.
    """
    shape = tuple(int(d) for d in input_shape)
    channels, spatial = shape[0], shape[1:]
    layouts: list[tuple[tuple[int, ...], bool]] = [(shape, False)]
    if spatial:
        layouts.append(((*spatial, channels), True))
        if channels == 1:
            layouts.append((spatial, False))
    found = array.shape
    for layout, channels_last in layouts:
        for batched in (False, True):
            if (found[1:] if batched else found) != layout:
                continue
            stack = array if batched else array[np.newaxis]
            if channels_last:
                stack = np.moveaxis(stack, -1, 1)
            return _scale(np.ascontiguousarray(stack.reshape(stack.shape[0], *shape)), where)
    raise DataError(
        f"{where}: image shape {found} does not fit the model, which was trained on images of "
        f"shape {shape} (channels first); give images of that size (nothing is resized)"
    )


def _read_npz(path: Path, *, input_shape: Sequence[int], split: str | None) -> list[ImageBatch]:
    try:
        archive = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, zlib.error) as exc:
        reason = f"{type(exc).__name__}: {exc}"
        raise DataError(f"{path}: cannot read this .npz file ({reason})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        return [
            ImageBatch(
                source=path,
                split="",
                x=to_model_input(np.asarray(archive), input_shape=input_shape, where=str(path)),
                labels=None,
            )
        ]
    with archive:
        try:
            names = list(archive.files)
            medmnist = [s.value for s in Split if f"{s.value}_images" in names]
            if medmnist:
                wanted = medmnist if split is None else [split]
                if split is not None and split not in medmnist:
                    raise DataError(
                        f"{path}: holds no '{split}_images' (splits present: "
                        f"{', '.join(medmnist)}); choose one of them with --split"
                    )
                out = []
                for s in wanted:
                    where = f"{path} ['{s}_images']"
                    x = to_model_input(
                        np.asarray(archive[f"{s}_images"]), input_shape=input_shape, where=where
                    )
                    key = f"{s}_labels"
                    labels = (
                        np.asarray(archive[key]).reshape(-1).astype(np.int64)
                        if key in names
                        else None
                    )
                    out.append(ImageBatch(source=path, split=s, x=x, labels=labels))
                return out
            if len(names) != 1:
                raise DataError(
                    f"{path}: holds {len(names)} arrays ({', '.join(sorted(names)) or 'none'}); "
                    "give a MedMNIST .npz (train_/val_/test_images) or an .npz with one image "
                    "array"
                )
            x = to_model_input(
                np.asarray(archive[names[0]]), input_shape=input_shape, where=str(path)
            )
            return [ImageBatch(source=path, split="", x=x, labels=None)]
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: cannot read this .npz file ({exc})") from None


def _read_picture(path: Path, *, input_shape: Sequence[int]) -> ImageBatch:
    from PIL import Image, UnidentifiedImageError

    channels = int(input_shape[0])
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L") and channels == 1:
                array = np.asarray(image, dtype=np.uint16)
            else:
                array = np.asarray(image.convert("L" if channels == 1 else "RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read this image ({type(exc).__name__}: {exc})") from None
    x = to_model_input(array, input_shape=input_shape, where=str(path))
    return ImageBatch(source=path, split="", x=x, labels=None)


def read_images(
    paths: Sequence[Path], *, input_shape: Sequence[int], split: str | None = None
) -> list[ImageBatch]:
    """Read and preprocess every file; the first that cannot be read stops it, named.

    Parameters
    ----------
    paths
        ``.npz`` (MedMNIST-style or a single array of images), ``.png``, ``.jpg``
        or ``.jpeg`` files.
    input_shape
        The model's input shape, channels first, e.g. ``(1, 28, 28)``.
    split
        For a MedMNIST ``.npz``: only this split (default: every split it holds).
    """
    batches: list[ImageBatch] = []
    for path in paths:
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        suffix = path.suffix.lower()
        if suffix == ".npz":
            batches.extend(_read_npz(path, input_shape=input_shape, split=split))
        elif suffix in IMAGE_SUFFIXES:
            batches.append(_read_picture(path, input_shape=input_shape))
        else:
            raise DataError(
                f"{path}: unsupported file type '{path.suffix}'; give one of {', '.join(SUFFIXES)}"
            )
    return batches
