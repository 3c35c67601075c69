"""Recognise an upload's format from its first bytes; names and MIME types are hints only."""

from __future__ import annotations

import struct

from pydicom.valuerep import VR

from lrpseg.io.nifti import is_nifti

__all__ = ["UNSUPPORTED_SIGNATURES", "sniff"]

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_DICOM_HINT_SUFFIXES = (".dcm", ".dicom", ".dic")
_DICOM_HINT_TYPES = ("application/dicom",)
_VRS = {vr.value.encode("ascii") for vr in VR}

# Formats we recognise but do not decode: answered with 415, not 400.
UNSUPPORTED_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"GIF87a", "GIF"),
    (0, b"GIF89a", "GIF"),
    (8, b"WEBP", "WebP"),
    (0, b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000 (JP2)"),
    (0, b"\xff\x4f\xff\x51", "JPEG 2000 codestream"),
    (0, b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (0, b"\xff\x0a", "JPEG XL"),
    (4, b"ftypheic", "HEIC"),
    (4, b"ftypavif", "AVIF"),
    (0, b"\x1f\x8b", "gzip"),
    (0, b"%PDF", "PDF"),
)


def sniff(data: bytes, filename: str | None = None, content_type: str | None = None) -> str:
    """Return "png", "jpeg", "tiff", "npy", "dicom", "nifti", "zip", "unsupported:<name>" or "unknown"."""
    if data[128:132] == b"DICM":  # checked first: a preamble may itself hold a TIFF header
        return "dicom"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] in _TIFF_MAGIC:
        return "tiff"
    if data.startswith(b"\x93NUMPY"):
        return "npy"
    if _looks_like_bare_dataset(data):
        return "dicom"
    if is_nifti(data):  # plain or gzip-compressed
        return "nifti"
    if data.startswith((b"PK\x03\x04", b"PK\x05\x06")):  # a DICOM series as a zip (an .npz is refused when opened)
        return "zip"
    for offset, magic, name in UNSUPPORTED_SIGNATURES:
        if data[offset : offset + len(magic)] == magic:
            return f"unsupported:{name}"
    if data[:2] == b"BM" and len(data) >= 6 and struct.unpack("<I", data[2:6])[0] == len(data):
        return "unsupported:BMP"
    if _hints_dicom(filename, content_type) and len(data) >= 8:
        return "dicom"
    return "unknown"


def _looks_like_bare_dataset(data: bytes) -> bool:
    """A DICOM data set without preamble: first tag in group 0002 or 0008, then a VR or a length."""
    if len(data) < 12:
        return False
    for endian, groups in (("<", (0x0002, 0x0008)), (">", (0x0002, 0x0008))):
        group, element = struct.unpack(endian + "HH", data[:4])
        if group not in groups or element > 0x1FFF:
            continue
        if data[4:6] in _VRS:  # explicit VR
            return True
        (length,) = struct.unpack(endian + "I", data[4:8])  # implicit VR: 32-bit length
        if endian == "<" and length < min(len(data), 1 << 16):
            return True
    return False


def _hints_dicom(filename: str | None, content_type: str | None) -> bool:
    name = (filename or "").lower()
    kind = (content_type or "").lower().split(";")[0].strip()
    return name.endswith(_DICOM_HINT_SUFFIXES) or kind in _DICOM_HINT_TYPES
