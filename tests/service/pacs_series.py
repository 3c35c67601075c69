"""Small DICOM series for the PACS tests, made with pydicom: n single-frame 64x64 CT (or other
modality) slices of one series, with positions, a frame of reference and a tube-shaped bright
structure, as a modality would send them."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def make_series(n: int = 6, size: int = 64, modality: str = "CT", seed: int = 0) -> list[pydicom.Dataset]:
    rng = np.random.default_rng(seed)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    yy, xx = np.mgrid[:size, :size]
    out = []
    for i in range(n):
        pixels = rng.normal(40, 15, (size, size))
        pixels[(yy - size / 2 - i) ** 2 + (xx - size / 3) ** 2 < (size / 8) ** 2] = 400
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Pacs", "PACS-1", "", "O"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", ""
        ds.ReferringPhysicianName = ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = modality, 3, i + 1
        ds.ImagePositionPatient = [0.0, 0.0, 2.0 * i]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [0.8, 0.8], 2.0
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = (np.clip(pixels, -1000, 3000) + 1024).astype(np.int16).tobytes()
        out.append(ds)
    return out


def encode(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def zipped(datasets: list[pydicom.Dataset]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for n, ds in enumerate(datasets):
            archive.writestr(f"{n}.dcm", encode(ds))
    return buffer.getvalue()
