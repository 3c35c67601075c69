"""``decode_image``: bytes of any accepted format -> :class:`DecodedImage`."""

from __future__ import annotations

from collections.abc import Callable

from lrpseg.io.dicom_in import decode_dicom
from lrpseg.io.errors import ImageDecodeError
from lrpseg.io.image import DecodedImage
from lrpseg.io.limits import Limits
from lrpseg.io.nifti import decode_nifti
from lrpseg.io.npy import decode_npy
from lrpseg.io.raster import decode_jpeg, decode_png
from lrpseg.io.sniff import sniff
from lrpseg.io.tiff import decode_tiff
from lrpseg.io.zipped import decode_zip

__all__ = ["decode_image"]

_DECODERS: dict[str, Callable[[bytes, Limits, int | None], DecodedImage]] = {
    "png": decode_png,
    "jpeg": decode_jpeg,
    "tiff": decode_tiff,
    "npy": decode_npy,
    "dicom": decode_dicom,
    "nifti": decode_nifti,
    "zip": decode_zip,
}


def decode_image(
    data: bytes,
    *,
    filename: str | None = None,
    content_type: str | None = None,
    max_pixels: int = 16_777_216,
    max_side: int = 8192,
    max_voxels: int = 256**3,
    frame: int | None = None,
) -> DecodedImage:
    """Decode an uploaded image or volume; the format is sniffed from its bytes.

    Volumes (``depth`` set, array (C, D, H, W)): NIfTI (.nii, .nii.gz), a DICOM series as a
    zip of its instances, and 3-D/4-D ``.npy`` (docs/formats.md). ``max_voxels`` bounds D*H*W.

    ``filename`` and ``content_type`` are hints only: they are consulted solely to try
    DICOM on a data set without preamble whose first bytes are not recognisable.
    ``max_pixels``/``max_side`` bound the decoded frame and are checked from the header
    before decoding. ``frame`` (0-based) picks one frame of a multi-frame DICOM or
    multi-page TIFF; such sources are refused (422) without it.
    Raises :class:`ImageDecodeError` with an HTTP ``status``, a ``code`` and a ``detail``.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, not {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise ImageDecodeError(400, "empty_upload", "the upload is empty")
    kind = sniff(data, filename, content_type)
    if kind.startswith("unsupported:"):
        raise ImageDecodeError(
            415,
            "unsupported_format",
            f"{kind.split(':', 1)[1]} images are not supported; send PNG, JPEG, TIFF, .npy, DICOM or NIfTI",
        )
    decoder = _DECODERS.get(kind)
    if decoder is None:
        raise ImageDecodeError(
            400, "unknown_format", "unrecognised image format; send PNG, JPEG, TIFF, .npy, DICOM or NIfTI"
        )
    return decoder(data, Limits(max_pixels=max_pixels, max_side=max_side, max_voxels=max_voxels), frame)
