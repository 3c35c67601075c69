"""Exceptions of the image I/O layer.

Details never carry pixel values or DICOM attribute values (patient data), only
what is wrong and, where useful, the offending dimension, dtype or syntax name.
"""

from __future__ import annotations

__all__ = ["DicomExportError", "ImageDecodeError"]


class ImageDecodeError(ValueError):
    """An upload could not be turned into an image.

    ``status`` is the HTTP status the service should answer with:
    400 malformed, truncated or unknown format; 413 too many pixels or too large a side;
    415 recognised but unsupported format, transfer syntax or photometric interpretation;
    422 valid file whose content is unusable (NaN/Inf, wrong ndim, multi-frame without
    ``frame``, frame out of range, zero size, no pixel data).
    ``code`` is a short slug for clients and metrics; ``detail`` a human sentence.
    """

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail

    def __repr__(self) -> str:
        return f"ImageDecodeError(status={self.status}, code={self.code!r}, detail={self.detail!r})"


class DicomExportError(ValueError):
    """A DICOM output (SEG, Parametric Map, Secondary Capture) could not be built."""
