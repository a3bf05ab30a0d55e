"""Write small synthetic DICOM files and series with pydicom, with known headers and pixels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


@dataclass(frozen=True)
class Patient:
    """Header values that identify a patient (the leak test plants markers here)."""

    name: str = "Test^Patient"
    patient_id: str = "PID0001"
    birth_date: str = "19700101"
    study_date: str = "20200101"


def write_slice(
    path: Path,
    *,
    stored: np.ndarray,
    slope: float = 1.0,
    intercept: float = 0.0,
    instance: int = 1,
    z_mm: float = 0.0,
    pixel_mm: tuple[float, float] = (1.0, 1.0),
    patient: Patient | None = None,
    series_uid: str | None = None,
    orientation: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
) -> Path:
    """Write one CT slice whose stored values are ``stored`` (int16, rows x columns).

    The real values are ``stored * slope + intercept`` (Hounsfield units);
    ``orientation`` is the ImageOrientationPatient (row and column directions).
    """
    patient = patient or Patient()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.StudyDate = patient.study_date
    ds.SeriesDate = patient.study_date
    ds.AcquisitionDate = patient.study_date
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [0.0, 0.0, z_mm]
    ds.ImageOrientationPatient = list(orientation)
    ds.PixelSpacing = [pixel_mm[0], pixel_mm[1]]
    ds.SliceThickness = 1.0
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.PixelData = np.ascontiguousarray(stored, dtype="<i2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_series(
    folder: Path,
    *,
    stored: np.ndarray,
    slope: float = 1.0,
    intercept: float = 0.0,
    slice_mm: float = 2.0,
    pixel_mm: tuple[float, float] = (1.0, 1.0),
    patient: Patient | None = None,
    file_stem: str = "slice",
) -> Path:
    """Write ``stored`` (slices x rows x columns) as one series, one file per slice.

    Files are written in reverse order so a reader must sort by ``InstanceNumber``.
    """
    uid = generate_uid()
    for k in reversed(range(stored.shape[0])):
        write_slice(
            folder / f"{file_stem}_{k:03d}.dcm",
            stored=stored[k],
            slope=slope,
            intercept=intercept,
            instance=k + 1,
            z_mm=k * slice_mm,
            pixel_mm=pixel_mm,
            patient=patient,
            series_uid=uid,
        )
    return folder
