"""DICOM files and series folders, read through MONAI's ``PydicomReader``.

A folder is one series: every DICOM file in it is a slice, stacked in
``InstanceNumber`` order, with the spacing and orientation the headers give.
``PydicomReader`` applies each slice's ``RescaleSlope`` and
``RescaleIntercept``, so CT comes out in Hounsfield units. Files in the folder
that are not DICOM (a stray text file, say) are not slices: they are reported
so the caller can count them as unreadable.

Only pixel data and the geometry tags reach the pipeline: MONAI's metadata is
pruned to orientation, position and spacing, and nothing else of the header
(names, IDs, dates) is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")


@dataclass(frozen=True)
class SeriesFiles:
    """The files of one series folder, split into DICOM slices and other files.

    Parameters
    ----------
    slices
        The DICOM files, sorted by name (MONAI orders them by ``InstanceNumber``).
    other
        Files that are not DICOM, sorted by name.
    """

    slices: tuple[Path, ...]
    other: tuple[Path, ...]


def is_dicom(path: Path) -> bool:
    """Whether ``path`` is a DICOM file: the ``DICM`` marker after the 128-byte preamble."""
    from pydicom.misc import is_dicom as _is_dicom

    try:
        return bool(_is_dicom(path))
    except OSError:
        return False


def series_files(folder: Path) -> SeriesFiles:
    """List a series folder's files (not recursively), separating DICOM slices from the rest.

    Hidden files (names starting with ``.``) are ignored, as a file manager's
    own files are not part of any series.
    """
    slices: list[Path] = []
    other: list[Path] = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or not entry.is_file():
            continue
        (slices if is_dicom(entry) else other).append(entry)
    return SeriesFiles(slices=tuple(slices), other=tuple(other))


def series_uids(files: tuple[Path, ...]) -> set[str]:
    """The distinct ``SeriesInstanceUID`` values of ``files``, read without pixel data.

    A folder is one series; several UIDs mean several series were put in one
    folder, which stacking would mix into one volume.
    """
    from pydicom import dcmread

    uids: set[str] = set()
    for path in files:
        header = dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
        uids.add(str(header.get("SeriesInstanceUID", "")))
    return uids


def pydicom_reader() -> object:
    """MONAI's ``PydicomReader`` as flmi uses it.

    Slope and intercept are applied; the affine is converted to RAS like
    NIfTI's; metadata is pruned to the geometry tags; in a series folder only
    files with the DICOM marker are read (``fname_regex=None``).
    """
    from monai.data.image_reader import PydicomReader

    return PydicomReader(affine_lps_to_ras=True, prune_metadata=True, fname_regex=None)  # type: ignore[arg-type]
