"""A zip upload: the instances of one DICOM series (an .npz, NumPy's zip, is refused with 415).

Members are read with their declared sizes checked first: at most ``max_side`` files (one
per slice), none over ``max_member_bytes``, so a zip bomb is refused before it is inflated.
Directories and macOS resource forks (``__MACOSX/``, ``._*``) are skipped.
"""

from __future__ import annotations

import io
import zipfile
import zlib

from lrpseg.io.dicom_series import decode_dicom_series
from lrpseg.io.errors import ImageDecodeError
from lrpseg.io.image import DecodedImage
from lrpseg.io.limits import Limits
from lrpseg.io.sniff import sniff

__all__ = ["decode_zip"]

_SLACK = 1 << 20  # header bytes allowed per instance beyond its pixels (float64 worst case)


def decode_zip(data: bytes, limits: Limits, frame: int | None) -> DecodedImage:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = [m for m in archive.infolist() if not _skipped(m)]
    except (zipfile.BadZipFile, zlib.error, ValueError, EOFError):
        raise ImageDecodeError(400, "zip_malformed", "the zip archive is malformed") from None
    if members and all(m.filename.endswith(".npy") for m in members):
        raise ImageDecodeError(415, "unsupported_format", "ZIP (e.g. .npz) images are not supported; send one .npy")
    if not members:
        raise ImageDecodeError(422, "empty_series", "the zip archive holds no files")
    if len(members) > limits.max_side:
        raise ImageDecodeError(413, "side_too_large", f"the zip holds {len(members)} files; at most {limits.max_side}")
    if frame is not None:
        raise ImageDecodeError(422, "frame_out_of_range", "frame does not apply to a DICOM series")
    per_member = limits.max_pixels * 8 + _SLACK
    if any(m.file_size > per_member for m in members):
        raise ImageDecodeError(413, "too_many_pixels", "a file in the zip is larger than one slice can be")
    try:
        files = [archive.read(m) for m in members]
    except (zipfile.BadZipFile, zlib.error, ValueError, EOFError, NotImplementedError, RuntimeError):
        raise ImageDecodeError(400, "zip_malformed", "a file in the zip archive could not be read") from None
    for index, (member, data) in enumerate(zip(members, files)):
        if sniff(data, member.filename) != "dicom":
            raise ImageDecodeError(400, "not_dicom", f"file {index} in the zip is not DICOM; a zip holds one series")
    return decode_dicom_series(files, limits)


def _skipped(member: zipfile.ZipInfo) -> bool:
    name = member.filename
    return member.is_dir() or name.startswith("__MACOSX/") or name.rsplit("/", 1)[-1].startswith("._")
