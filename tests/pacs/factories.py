"""Real DICOM series (pydicom's CT_small as slices, tests.lrpseg.io.test_dicom_series) and STOW-RS bodies."""

from __future__ import annotations

import pydicom
from pydicom.uid import generate_uid

from core.settings import DicomRoute, Settings
from tests.lrpseg.io.test_dicom_series import encode, series
from tests.service import factories

BOUNDARY = "lrpseg-stow-boundary"
STOW_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def ct_series(n: int = 4, seed: int = 0) -> list[pydicom.Dataset]:
    """n CT slices of one new series in one new study (file meta agreeing with each instance)."""
    study = generate_uid()
    out = []
    for _, ds in series(n, seed):
        ds.StudyInstanceUID = study
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        out.append(ds)
    return out


def instance_bytes(datasets: list[pydicom.Dataset]) -> list[bytes]:
    return [encode(ds) for ds in datasets]


def stow_body(parts: list[bytes | tuple[bytes, str]]) -> bytes:
    """A multipart/related body; a part is DICOM bytes, or (bytes, its Content-Type)."""
    out = b""
    for part in parts:
        data, ctype = part if isinstance(part, tuple) else (part, "application/dicom")
        out += f"--{BOUNDARY}\r\nContent-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def intake_settings(**overrides: object) -> Settings:
    """Service settings for the series intake tests: a short quiet period, CT routed to the 3-D model."""
    return factories.service_settings(
        **{
            "series_quiet_seconds": 0.5,
            "series_sweep_interval": 0.1,
            "dicom_routes": [DicomRoute(match={"Modality": "CT"}, model=factories.VOLUME)],
            **overrides,
        }
    )
