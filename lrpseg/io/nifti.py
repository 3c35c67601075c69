"""NIfTI-1/-2 volumes (.nii, .nii.gz) with nibabel: header checked first, then decoded.

Axes: the image is brought to the closest canonical orientation (RAS+, nibabel's
``as_closest_canonical``) and returned as (D, H, W) = (k, j, i), i.e. axial slices from
inferior to superior, rows posterior -> anterior, columns left -> right. Values: the
header's scl_slope/scl_inter applied (nibabel's ``get_fdata``), then into [0, 1] as a
float ``.npy`` is (kept inside [0, 1], else min-max over the volume; NaN/inf refused).
A 4-D image (time series) needs ``frame`` to pick one volume, like a multi-frame DICOM.
A gzip stream is inflated only as far as the header declares, so a gzip bomb costs nothing.
"""

from __future__ import annotations

import gzip
import io
import logging
import math
import zlib

import nibabel as nib
import numpy as np

from lrpseg.io.errors import ImageDecodeError
from lrpseg.io.image import DecodedImage
from lrpseg.io.limits import Limits, select_frame
from lrpseg.io.scaling import scale_float

__all__ = ["decode_nifti", "is_nifti"]

_HEADERS = ((344, b"n+1\x00", 348, nib.Nifti1Header), (4, b"n+2\x00", 540, nib.Nifti2Header))
_READ_ERRORS = (
    ValueError,
    nib.spatialimages.HeaderDataError,
    TypeError,
    EOFError,
    OSError,
    zlib.error,
    nib.filebasedimages.ImageFileError,
    nib.orientations.OrientationError,  # a singular affine
)
# nibabel logs its header fixes (sizeof_hdr, sform_code, ...) quoting header values; a header's
# free-text fields may name a patient. Its problems reach the caller as our exceptions instead.
logging.getLogger("nibabel").setLevel(logging.CRITICAL)


def _kind(head: bytes) -> tuple[int, type[nib.Nifti1Header]] | None:
    for offset, magic, size, header in _HEADERS:
        if head[offset : offset + len(magic)] == magic:
            return size, header
    return None


def is_nifti(data: bytes) -> bool:
    """A single-file NIfTI-1/-2 (n+1 / n+2 magic), plain or gzip-compressed."""
    return _kind(_head(data, 548)) is not None


def _head(data: bytes, n: int) -> bytes:
    if not data.startswith(b"\x1f\x8b"):
        return data[:n]
    try:
        return gzip.GzipFile(fileobj=io.BytesIO(data)).read(n)
    except _READ_ERRORS:
        return b""


def decode_nifti(data: bytes, limits: Limits, frame: int | None) -> DecodedImage:
    kind = _kind(_head(data, 548))
    if kind is None:
        raise ImageDecodeError(400, "nifti_malformed", "NIfTI header is unreadable")
    size, header_class = kind
    try:
        header = header_class.from_fileobj(io.BytesIO(_head(data, size)))
        shape = tuple(int(s) for s in header.get_data_shape())
        dtype = header.get_data_dtype()
        offset = int(header["vox_offset"])
    except _READ_ERRORS:
        raise ImageDecodeError(400, "nifti_malformed", "NIfTI header is malformed") from None
    if not 3 <= len(shape) <= 4 or (len(shape) == 4 and shape[3] < 1):
        raise ImageDecodeError(422, "bad_ndim", f"NIfTI image has shape {shape}; expected a 3-D volume (X, Y, Z[, T])")
    if dtype.kind not in "biuf" or dtype.names is not None:
        raise ImageDecodeError(422, "nifti_dtype", f"NIfTI data type {dtype} is not supported; send integers or floats")
    x, y, z = shape[:3]
    limits.check_volume(z, y, x, "NIfTI volume")
    index = select_frame(shape[3] if len(shape) == 4 else 1, frame, "NIfTI image")
    needed = offset + math.prod(shape) * dtype.itemsize
    full = _head(data, needed) if data.startswith(b"\x1f\x8b") else data
    if len(full) < needed:
        raise ImageDecodeError(400, "nifti_truncated", "NIfTI data is shorter than its header declares")
    try:
        image_class = nib.Nifti2Image if header_class is nib.Nifti2Header else nib.Nifti1Image
        volume = image_class.from_bytes(full[:needed])
        if len(shape) == 4:
            volume = volume.slicer[..., index]
        values = np.asarray(nib.as_closest_canonical(volume).get_fdata(dtype=np.float64))
    except _READ_ERRORS:
        raise ImageDecodeError(400, "nifti_malformed", "NIfTI image could not be read") from None
    raw = np.ascontiguousarray(np.transpose(values, (2, 1, 0)))[np.newaxis].astype(np.float32)
    return DecodedImage.build(
        scale_float(raw),
        raw,
        format="nifti",
        bit_depth=dtype.itemsize * 8,
        frame=index if len(shape) == 4 else None,
        frames=shape[3] if len(shape) == 4 else 1,
    )
