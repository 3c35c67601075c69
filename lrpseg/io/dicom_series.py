"""A DICOM series (one single-frame grey instance per slice) -> one volume.

Instances must share SeriesInstanceUID, Rows, Columns and a grey photometric
interpretation. Slices are ordered by their position along the slice normal
(ImagePositionPatient projected on the cross product of ImageOrientationPatient's row and
column directions), else by InstanceNumber; two slices at one place are refused. Values:
each slice's modality LUT (Rescale Slope/Intercept), then the first slice's VOI window for
the whole volume, else min-max over the volume; MONOCHROME1 inverted. Sizes are checked
against the limits from the headers, before any pixel data is decoded.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydicom import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut, pixel_array

from lrpseg.io.dicom_in import _lut_input, _read, _transfer_syntax, lut_dataset, voi_output_range
from lrpseg.io.dicom_ref import reference_dataset
from lrpseg.io.errors import ImageDecodeError
from lrpseg.io.image import DecodedImage
from lrpseg.io.limits import Limits
from lrpseg.io.quiet import quiet
from lrpseg.io.scaling import minmax

__all__ = ["decode_dicom_series", "slice_order"]

_GREY = ("MONOCHROME1", "MONOCHROME2")


def decode_dicom_series(files: Sequence[bytes], limits: Limits) -> DecodedImage:
    """Decode the instances of one series (any order) into a (1, D, H, W) volume."""
    if not files:
        raise ImageDecodeError(422, "empty_series", "the DICOM series holds no instances")
    with quiet():
        datasets = [_read(data) for data in files]
        for ds in datasets:
            _transfer_syntax(ds)
        rows, columns, photometric = _check_series(datasets)
        limits.check_volume(len(datasets), rows, columns, "DICOM series")
        ordered = [datasets[i] for i in slice_order(datasets)]
        try:
            values = np.stack([apply_modality_lut(pixel_array(ds), lut_dataset(ds, 0)) for ds in ordered])
        except Exception:  # any plugin failure on corrupt data is the upload's fault
            raise ImageDecodeError(
                400, "dicom_pixel_data_corrupt", "DICOM pixel data of a series instance could not be decoded"
            ) from None
    values = values.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise ImageDecodeError(422, "non_finite", "DICOM series holds NaN or infinite values")
    unit = _to_unit(values, lut_dataset(ordered[0], 0))
    unit = 1.0 - unit if photometric == "MONOCHROME1" else unit
    modality = str(ordered[0].get("Modality") or "").strip().upper() or None
    bits = int(ordered[0].get("BitsStored") or ordered[0].BitsAllocated)
    with quiet():
        references = tuple(reference_dataset(ds) for ds in ordered)
    return DecodedImage.build(
        unit[np.newaxis],
        values.astype(np.float32)[np.newaxis],
        format="dicom-series",
        bit_depth=bits,
        modality=modality,
        series=references,
    )


def _check_series(datasets: list[Dataset]) -> tuple[int, int, str]:
    """(Rows, Columns, photometric) shared by every instance, or 422 naming the difference."""
    first = datasets[0]
    try:
        series = {str(ds.SeriesInstanceUID) for ds in datasets}
        sizes = {(int(ds.Rows), int(ds.Columns)) for ds in datasets}
        photometrics = {str(ds.PhotometricInterpretation).strip().upper() for ds in datasets}
        frames = {int(ds.get("NumberOfFrames") or 1) for ds in datasets}
    except AttributeError:
        raise ImageDecodeError(
            422, "dicom_attribute_missing", "a series instance lacks SeriesInstanceUID or an Image Pixel attribute"
        ) from None
    except (TypeError, ValueError):
        raise ImageDecodeError(400, "dicom_malformed", "DICOM image attributes are malformed") from None
    if len(series) > 1:
        raise ImageDecodeError(422, "mixed_series", f"the instances belong to {len(series)} series; send one series")
    if len(sizes) > 1:
        raise ImageDecodeError(422, "mixed_sizes", f"the instances differ in size: {sorted(sizes)}")
    if frames != {1}:
        raise ImageDecodeError(422, "multi_frame", "a series is read from single-frame instances only")
    (photometric,) = photometrics if len(photometrics) == 1 else ("mixed",)
    if photometric not in _GREY:
        raise ImageDecodeError(415, "unsupported_photometric", "a series volume must be grey (MONOCHROME1/2)")
    if not any(k in first for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ImageDecodeError(422, "no_pixel_data", "a series instance has no pixel data")
    return int(first.Rows), int(first.Columns), photometric


def slice_order(datasets: Sequence[Dataset]) -> list[int]:
    """Indices of the instances from first to last slice: by position along the slice normal
    when every instance has ImagePositionPatient and the first has ImageOrientationPatient, else
    by InstanceNumber; 422 when neither orders them or two slices coincide."""
    orientation = datasets[0].get("ImageOrientationPatient")
    if orientation is not None and len(orientation) == 6 and all("ImagePositionPatient" in d for d in datasets):
        iop = np.asarray([float(v) for v in orientation])
        normal = np.cross(iop[:3], iop[3:])
        keys = [float(np.dot([float(v) for v in d.ImagePositionPatient], normal)) for d in datasets]
    elif all(d.get("InstanceNumber") is not None for d in datasets):
        keys = [float(d.InstanceNumber) for d in datasets]
    else:
        raise ImageDecodeError(
            422, "unordered_series", "the instances carry neither ImagePositionPatient nor InstanceNumber to order them"
        )
    if len(set(np.round(keys, 6))) != len(keys):
        raise ImageDecodeError(422, "duplicate_slices", "two instances of the series lie at the same slice position")
    return [int(i) for i in np.argsort(keys, kind="stable")]


def _to_unit(values: np.ndarray, lut: Dataset) -> np.ndarray:
    """The first slice's VOI (window or VOI LUT) over the whole volume, else min-max."""
    try:
        value_range = voi_output_range(values, lut)
        if value_range is None:
            return minmax(values)
        return minmax(apply_voi_lut(_lut_input(values, lut), lut, index=0), *value_range)
    except (ValueError, TypeError, IndexError, KeyError, AttributeError):
        raise ImageDecodeError(422, "dicom_bad_lut", "the series' VOI LUT or window attributes are invalid") from None
