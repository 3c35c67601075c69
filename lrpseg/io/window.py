"""A model's declared input window, applied to a decoded image's source values.

The window [low, high] is in the source's own units: DICOM modality values (stored values
after Rescale Slope/Intercept, e.g. Hounsfield units), a DICOM series' modality values, the
scaled values of a NIfTI volume, or the raw numbers of any other format. It replaces the
decoder's scaling into [0, 1] (DICOM VOI window, min-max, dtype range): values are mapped
linearly, clipped, and MONOCHROME1 DICOM is inverted afterwards as usual.
"""

from __future__ import annotations

import numpy as np
from pydicom.pixels import apply_modality_lut

from lrpseg.io.dicom_in import lut_dataset
from lrpseg.io.image import DecodedImage
from lrpseg.io.scaling import minmax

__all__ = ["source_values", "windowed"]


def source_values(image: DecodedImage) -> np.ndarray:
    """float64 source values in the window's units, (C, H, W) or (C, D, H, W)."""
    raw = image.raw if image.raw is not None else image.array
    if image.dicom is None or image.channels != 1:
        return raw.astype(np.float64)
    lut = lut_dataset(image.dicom, image.frame or 0)
    return np.asarray(apply_modality_lut(raw[0], lut), dtype=np.float64)[np.newaxis]


def windowed(image: DecodedImage, low: float, high: float) -> np.ndarray:
    """float32 pixels in [0, 1]: the source values through the window [low, high]."""
    unit = minmax(source_values(image), low, high)
    photometric = str(image.dicom.get("PhotometricInterpretation", "")) if image.dicom is not None else ""
    return 1.0 - unit if photometric.strip().upper() == "MONOCHROME1" else unit
