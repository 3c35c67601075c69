"""DICOM decoding with pydicom 3 (compressed syntaxes through its pylibjpeg plugins).

Pipeline for grey images: stored values -> modality LUT (rescale slope/intercept or
Modality LUT Sequence) -> VOI LUT (VOI LUT Sequence, else window centre/width) ->
min-max over the VOI output range into [0, 1] -> MONOCHROME1 inverted. Without any
VOI the modality values are min-max scaled over the frame itself. Enhanced multi-frame
objects carry rescale and window per frame in their functional groups; those are used.
Colour: YBR is converted to RGB by pydicom, PALETTE COLOR through its colour LUT, then
values are divided by 2**BitsStored - 1 (palette: by the LUT's range).

Rows and Columns are checked against the limits before any pixel is decoded, and only
the chosen frame of a multi-frame object is decoded.
"""

from __future__ import annotations

import io
import struct

import numpy as np
from pydicom import Dataset, dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, get_decoder, pixel_array
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from lrpseg.io.dicom_ref import reference_dataset
from lrpseg.io.errors import ImageDecodeError
from lrpseg.io.image import DecodedImage
from lrpseg.io.limits import Limits, select_frame
from lrpseg.io.quiet import quiet
from lrpseg.io.scaling import minmax, scale_by_max, to_chw

__all__ = ["decode_dicom", "lut_dataset", "voi_output_range"]

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_GREY = ("MONOCHROME1", "MONOCHROME2")
_RGB = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")
_PALETTE = "PALETTE COLOR"
_READ_ERRORS = (
    EOFError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    NotImplementedError,
    OverflowError,
    struct.error,
    UnicodeDecodeError,
)
_LUT_KEYWORDS = (
    "PhotometricInterpretation",
    "BitsStored",
    "BitsAllocated",
    "PixelRepresentation",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "ModalityLUTSequence",
    "VOILUTSequence",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
)
_FUNCTIONAL_GROUP_LUTS = (
    ("PixelValueTransformationSequence", ("RescaleSlope", "RescaleIntercept", "RescaleType")),
    ("FrameVOILUTSequence", ("WindowCenter", "WindowWidth", "VOILUTFunction")),
)


def decode_dicom(data: bytes, limits: Limits, frame: int | None) -> DecodedImage:
    # Errors raised below use `from None`: pydicom messages may quote attribute values.
    with quiet() as caught:
        ds = _read(data)
        transfer_syntax = _transfer_syntax(ds)
        if _truncated(ds, len(data), transfer_syntax, caught):
            raise ImageDecodeError(400, "dicom_truncated", "DICOM file is truncated (ends inside a data element)")
        if not any(keyword in ds for keyword in _PIXEL_KEYWORDS):
            name = UID(str(ds.get("SOPClassUID", ""))).name or "unknown SOP class"
            raise ImageDecodeError(422, "no_pixel_data", f"DICOM object ({name}) has no pixel data")
        rows, columns, frames, photometric, bits = _image_attributes(ds)
        limits.check(rows, columns, "DICOM image")
        index = select_frame(frames, frame, "DICOM object")
        _check_decodable(transfer_syntax, photometric)
        stored = _decode_frame(ds, index, transfer_syntax)
        raw, array = _to_unit(ds, stored, index, photometric, bits)
    multi = frames > 1
    return DecodedImage.build(
        array,
        raw,
        format="dicom",
        bit_depth=bits,
        dicom=reference_dataset(ds, frame=index if multi else None),
        frame=index if multi else None,
        frames=frames,
        modality=str(ds.get("Modality") or "").strip().upper() or None,
    )


def _read(data: bytes) -> Dataset:
    has_preamble = data[128:132] == b"DICM"
    try:
        ds = dcmread(io.BytesIO(data), force=not has_preamble)
    except InvalidDicomError:
        raise ImageDecodeError(400, "not_dicom", "file is not DICOM") from None
    except _READ_ERRORS:
        raise ImageDecodeError(400, "dicom_malformed", "DICOM data set is malformed") from None
    if len(ds) == 0:
        raise ImageDecodeError(400, "not_dicom", "file holds no DICOM data elements")
    return ds


def _transfer_syntax(ds: Dataset) -> UID:
    """The file's transfer syntax; inferred from the encoding for files without meta."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID"):
        return UID(str(meta.TransferSyntaxUID))
    implicit, little = ds.original_encoding
    if implicit and not little:
        raise ImageDecodeError(400, "dicom_malformed", "DICOM data set has an impossible encoding")
    uid = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    ds.ensure_file_meta()
    ds.file_meta.TransferSyntaxUID = uid
    return uid


def _truncated(ds: Dataset, n_bytes: int, transfer_syntax: UID, caught: list) -> bool:
    """True when the last element's declared length runs past the end of the file."""
    if any("end of file" in str(w.message).lower() for w in caught):
        return True
    if transfer_syntax == DeflatedExplicitVRLittleEndian:  # offsets refer to the inflated stream
        return False
    last = ds.get_item(max(ds.keys()))
    if not isinstance(last, RawDataElement) or last.length == 0xFFFFFFFF:
        return False
    return last.value_tell + last.length > n_bytes


def _image_attributes(ds: Dataset) -> tuple[int, int, int, str, int]:
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames") or 1)
        photometric = str(ds.PhotometricInterpretation).strip().upper()
        bits = int(ds.get("BitsStored") or ds.BitsAllocated)
    except AttributeError as exc:
        missing = str(exc).split("'")[-2] if "'" in str(exc) else "an Image Pixel attribute"
        raise ImageDecodeError(422, "dicom_attribute_missing", f"DICOM image lacks {missing}") from None
    except (TypeError, ValueError):
        raise ImageDecodeError(400, "dicom_malformed", "DICOM image attributes are malformed") from None
    if frames < 1:
        raise ImageDecodeError(422, "empty_image", "DICOM Number of Frames is 0")
    return rows, columns, frames, photometric, bits


def _check_decodable(transfer_syntax: UID, photometric: str) -> None:
    label = f"{transfer_syntax.name} ({transfer_syntax})" if transfer_syntax.is_valid else "unknown"
    try:
        decoder = get_decoder(transfer_syntax)
    except NotImplementedError:
        raise ImageDecodeError(
            415, "unsupported_transfer_syntax", f"DICOM transfer syntax {label} cannot be decoded"
        ) from None
    if not decoder.is_available:
        raise ImageDecodeError(
            415,
            "decoder_unavailable",
            f"no decoder plugin is installed for DICOM transfer syntax {label}",
        )
    if photometric not in (*_GREY, *_RGB, _PALETTE):
        raise ImageDecodeError(
            415, "unsupported_photometric", f"DICOM photometric interpretation {photometric} is not supported"
        )


def _decode_frame(ds: Dataset, index: int, transfer_syntax: UID) -> np.ndarray:
    try:
        return pixel_array(ds, index=index)
    except Exception:  # any plugin failure on corrupt data is the upload's fault, not ours
        raise ImageDecodeError(
            400,
            "dicom_pixel_data_corrupt",
            f"DICOM pixel data could not be decoded as {transfer_syntax.name}: "
            "corrupt, truncated or inconsistent with the image attributes",
        ) from None


def _to_unit(ds: Dataset, stored: np.ndarray, index: int, photometric: str, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (raw (C,H,W), float32 array in [0, 1])."""
    if photometric == _PALETTE:
        rgb = apply_color_lut(stored, ds)
        raw = to_chw(rgb)
        return raw, scale_by_max(raw, np.iinfo(rgb.dtype).max)
    if photometric in _RGB:
        raw = to_chw(stored)
        if raw.shape[0] != 3:
            raise ImageDecodeError(422, "bad_channels", f"{photometric} DICOM image has {raw.shape[0]} samples")
        return raw, scale_by_max(raw, 2**bits - 1)
    raw = to_chw(stored)
    if raw.shape[0] != 1:
        raise ImageDecodeError(422, "bad_channels", f"{photometric} DICOM image has {raw.shape[0]} samples")
    if stored.dtype.kind == "f" and not np.all(np.isfinite(stored)):
        raise ImageDecodeError(422, "non_finite", "DICOM float pixel data contains NaN or infinite values")
    array = grey_to_unit(stored, lut_dataset(ds, index))[np.newaxis]
    return raw, (1.0 - array if photometric == "MONOCHROME1" else array)


def grey_to_unit(stored: np.ndarray, lut: Dataset) -> np.ndarray:
    """Modality LUT, then VOI LUT/window, then min-max over the VOI output range."""
    try:
        values = apply_modality_lut(stored, lut)
        value_range = voi_output_range(values, lut)
        if value_range is None:
            return minmax(values)
        return minmax(apply_voi_lut(_lut_input(values, lut), lut, index=0), *value_range)
    except ImageDecodeError:
        raise  # e.g. values that overflowed in the rescale: named as such
    except (ValueError, TypeError, IndexError, KeyError, AttributeError):
        raise ImageDecodeError(
            422, "dicom_bad_lut", "DICOM modality/VOI LUT or window attributes are invalid"
        ) from None


def voi_output_range(values: np.ndarray, lut: Dataset) -> tuple[float, float] | None:
    """The range the VOI step maps into, or None when there is no VOI transform.

    Found by pushing probes through pydicom's own VOI code: every LUT entry for a VOI
    LUT Sequence, +-1e15 for a window (the clipped extremes), so the result follows
    pydicom's output-range convention exactly.
    """
    if lut.get("VOILUTSequence"):
        descriptor = lut.VOILUTSequence[0].LUTDescriptor
        entries, first = int(descriptor[0]) or 65536, int(descriptor[1])
        probe = np.arange(first, first + entries, dtype=np.int64)
    elif lut.get("WindowCenter") is not None and lut.get("WindowWidth") is not None:
        probe = np.array([-1e15, 1e15])
    else:
        return None
    out = apply_voi_lut(probe, lut, index=0)
    return float(out.min()), float(out.max())


def _lut_input(values: np.ndarray, lut: Dataset) -> np.ndarray:
    """A VOI LUT indexes by integer value: round modality output before the lookup."""
    if lut.get("VOILUTSequence") and values.dtype.kind == "f":
        return np.rint(values).astype(np.int64)
    return values


def lut_dataset(ds: Dataset, index: int) -> Dataset:
    """A small dataset with the LUT attributes that apply to frame ``index``.

    Top-level attributes win; otherwise the frame's Per-frame Functional Group, then the
    Shared Functional Group of an enhanced multi-frame object.
    """
    lut = Dataset()
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:  # byte order of OW LUT data
        lut.file_meta = FileMetaDataset()
        lut.file_meta.TransferSyntaxUID = meta.TransferSyntaxUID
    for keyword in _LUT_KEYWORDS:
        if keyword in ds:
            lut.add(ds[keyword])
    groups = []
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame and index < len(per_frame):
        groups.append(per_frame[index])
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        groups.append(shared[0])
    for group in groups:
        for sequence, keywords in _FUNCTIONAL_GROUP_LUTS:
            items = group.get(sequence)
            if not items:
                continue
            for keyword in keywords:
                if keyword in items[0] and keyword not in lut:
                    lut.add(items[0][keyword])
    return lut
