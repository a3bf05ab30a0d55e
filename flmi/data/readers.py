"""Read one image (PNG, JPEG, DICOM file, DICOM series folder, NIfTI) with MONAI's readers.

The reader is chosen by what the path is: a folder is a DICOM series
(``PydicomReader``), ``.nii`` / ``.nii.gz`` is NIfTI (``NibabelReader``),
``.png`` / ``.jpg`` / ``.jpeg`` / ``.bmp`` / ``.tif`` is a picture
(``PILReader``), and any other file is DICOM if it carries the DICOM marker
(DICOM files often have no suffix).

A file that cannot be read raises :class:`UnreadableImage` with a code (what
may leave a site) and a detail (the path and the reader's message, for the
site's own log only). Warnings the readers raise, which may name files, go to
the site's log too, never to the console.
"""

from __future__ import annotations

import functools
import logging
import warnings
from enum import StrEnum
from pathlib import Path
from typing import Any

from flmi.data.dicom import (
    DICOM_SUFFIXES,
    is_dicom,
    pydicom_reader,
    series_files,
    series_uids,
)

site_log = logging.getLogger("flmi.site.data")

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
NIFTI_SUFFIXES = (".nii", ".nii.gz")


class UnreadableCode(StrEnum):
    """Why an image could not be read. Only these codes and their counts leave a site."""

    MISSING = "missing"
    NOT_DICOM = "not_dicom"
    UNSUPPORTED = "unsupported"
    CORRUPT = "corrupt"
    MIXED_SERIES = "mixed_series"


class UnreadableImage(Exception):  # noqa: N818 - a condition, caught by the manifest loader
    """An image that cannot be read.

    Parameters
    ----------
    code
        Why; may leave the site.
    detail
        The path and the reader's message; for the site's own log only.
    """

    def __init__(self, *, code: UnreadableCode, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _reader_for(path: Path) -> tuple[Any, list[Path]]:
    """The MONAI reader for ``path`` and the files in it that are no image (series folders)."""
    from monai.data.image_reader import NibabelReader, PILReader

    if path.is_dir():
        files = series_files(path)
        if not files.slices:
            raise UnreadableImage(
                code=UnreadableCode.NOT_DICOM,
                detail=f"{path}: folder holds no DICOM file ({len(files.other)} other files)",
            )
        try:
            uids = series_uids(files.slices)
        except Exception as exc:  # a damaged header; pydicom raises many kinds
            raise UnreadableImage(
                code=UnreadableCode.CORRUPT, detail=f"{path}: {type(exc).__name__}: {exc}"
            ) from None
        if len(uids) > 1:
            raise UnreadableImage(
                code=UnreadableCode.MIXED_SERIES,
                detail=f"{path}: holds {len(uids)} series; put each series in its own folder",
            )
        return pydicom_reader(), list(files.other)
    if not path.is_file():
        raise UnreadableImage(code=UnreadableCode.MISSING, detail=f"{path}: no such file")
    suffix = _suffix(path)
    if suffix in NIFTI_SUFFIXES:
        return NibabelReader(), []
    if suffix in PICTURE_SUFFIXES:
        return PILReader(), []
    if is_dicom(path):
        return pydicom_reader(), []
    code = UnreadableCode.NOT_DICOM if suffix in DICOM_SUFFIXES else UnreadableCode.UNSUPPORTED
    raise UnreadableImage(
        code=code,
        detail=f"{path}: not a DICOM file (no DICM marker) and not a PNG, JPEG or NIfTI file",
    )


@functools.cache
def _load_image() -> Any:
    """One ``LoadImage`` per process.

    Building one registers every MONAI reader, and the GPU DICOM decoder's
    reader logs a warning each time nvImageCodec is absent, which says
    nothing about the images: that logger is held at ERROR while it is built.
    """
    from monai.transforms.io.array import LoadImage

    notice = logging.getLogger("monai.data.nvimgcodec_pydicom_plugin")
    level = notice.level
    notice.setLevel(logging.ERROR)
    try:
        loader = LoadImage(image_only=True)
    finally:
        notice.setLevel(level)
    site_log.debug("MONAI readers registered: %s", [type(r).__name__ for r in loader.readers])
    return loader


def read_image(path: Path) -> tuple[Any, list[Path]]:
    """Read one image with MONAI's ``LoadImage``.

    Parameters
    ----------
    path
        A picture, a NIfTI file, a DICOM file or a DICOM series folder.

    Returns
    -------
    tuple[MetaTensor, list[Path]]
        The image (spatial axes first, channels last where it has any; the
        affine in RAS) and, for a series folder, the files in it that are not
        DICOM and were left out.

    Raises
    ------
    UnreadableImage
        The path is missing, is no image flmi reads, or its reader failed.
    """
    reader, skipped = _reader_for(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            # The reader given at call time is the only one tried: no fallback through
            # every registered reader, whose failures MONAI logs with the file's name.
            image = _load_image()(str(path), reader=reader)
        except Exception as exc:  # a reader can fail in many ways on a damaged file
            reason = (str(exc).strip().splitlines() or [""])[0]
            raise UnreadableImage(
                code=UnreadableCode.CORRUPT, detail=f"{path}: {type(exc).__name__}: {reason}"
            ) from None
    for warning in caught:
        site_log.debug("reading %s: %s", path, warning.message)
    return image, skipped
