"""Image I/O: decoding every accepted upload format, and DICOM outputs.

``decode_image`` sniffs PNG, JPEG, TIFF, NumPy ``.npy`` and DICOM from the bytes and
returns a :class:`DecodedImage` (float32 (C, H, W) in [0, 1]); bad input raises
:class:`ImageDecodeError` carrying the HTTP status to answer with. DICOM outputs
(SEG, Parametric Map, Secondary Capture) live in :mod:`lrpseg.io.dicom_out`.
See docs/formats.md for the rules.
"""

from __future__ import annotations

from lrpseg.io.decode import decode_image
from lrpseg.io.errors import DicomExportError, ImageDecodeError
from lrpseg.io.image import FORMATS, DecodedImage

__all__ = ["FORMATS", "DecodedImage", "DicomExportError", "ImageDecodeError", "decode_image"]
