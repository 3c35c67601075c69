"""NumPy ``.npy`` decoding: header checked first, never unpickled.

Layout rule (documented in docs/formats.md):
  (H, W)                      grey
  (C, H, W) with C in {1, 3}  channel-first; wins when both ends could be channels
  (H, W, C) with C in {1, 3}  channel-last, used when the first axis is not 1 or 3
  (D, H, W)                   a grey volume: 3 axes, neither end of size 1 or 3
  (C, D, H, W), C in {1, 3}   a volume, channel-first (the unambiguous form for any D)
Values: bool -> 0/1; integers by their dtype's full range; floats must be finite and
are kept when already inside [0, 1], otherwise min-max scaled over the image.
"""

from __future__ import annotations

import io
import math

import numpy as np
from numpy.lib import format as npformat

from lrpseg.io.errors import ImageDecodeError
from lrpseg.io.image import DecodedImage
from lrpseg.io.limits import Limits, select_frame
from lrpseg.io.scaling import scale_by_dtype, scale_float

__all__ = ["decode_npy", "npy_layout"]

_CHANNELS = (1, 3)


def decode_npy(data: bytes, limits: Limits, frame: int | None) -> DecodedImage:
    shape, dtype, offset = _header(data)
    _check_dtype(dtype)
    layout = npy_layout(shape)
    if layout in ("DHW", "CDHW"):
        depth, height, width = shape[-3:]
        limits.check_volume(depth, height, width, what=".npy volume")
    else:
        height, width = (shape[0], shape[1]) if layout in ("HW", "HWC") else (shape[1], shape[2])
        limits.check(height, width, ".npy image")
    select_frame(1, frame, ".npy image")
    if len(data) - offset < math.prod(shape) * dtype.itemsize:
        raise ImageDecodeError(400, "npy_truncated", ".npy data is shorter than its header declares")
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:
        raise ImageDecodeError(400, "npy_truncated", ".npy data is shorter than its header declares") from exc
    raw = arr[np.newaxis] if layout in ("HW", "DHW") else np.moveaxis(arr, 2, 0) if layout == "HWC" else arr
    array = scale_float(raw) if raw.dtype.kind == "f" else scale_by_dtype(raw)
    bit_depth = 1 if raw.dtype == np.bool_ else raw.dtype.itemsize * 8
    return DecodedImage.build(array, raw, format="npy", bit_depth=bit_depth)


def npy_layout(shape: tuple[int, ...]) -> str:
    """Return "HW", "CHW", "HWC" (images), "DHW" or "CDHW" (volumes) for an array shape, or raise 422."""
    if len(shape) == 2:
        return "HW"
    if len(shape) == 3:
        if shape[0] in _CHANNELS:
            return "CHW"
        if shape[2] in _CHANNELS:
            return "HWC"
        return "DHW"
    if len(shape) == 4:
        if shape[0] in _CHANNELS:
            return "CDHW"
        raise ImageDecodeError(
            422,
            "bad_channels",
            f".npy array of shape {shape} is no (C,D,H,W) volume: its first axis must be 1 or 3 channels",
        )
    raise ImageDecodeError(
        422,
        "bad_ndim",
        f".npy array has {len(shape)} dimensions (shape {shape}); expected (H,W), (C,H,W), (H,W,C), "
        "(D,H,W) or (C,D,H,W)",
    )


def _header(data: bytes) -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, dtype and data offset, read without touching the array data."""
    stream = io.BytesIO(data)
    try:
        version = npformat.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = npformat.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, _, dtype = npformat.read_array_header_2_0(stream)
        else:
            raise ImageDecodeError(415, "npy_version", f".npy format version {version} is not supported")
    except ImageDecodeError:
        raise
    except (ValueError, EOFError, SyntaxError, TypeError) as exc:
        raise ImageDecodeError(400, "npy_malformed", ".npy header is malformed") from exc
    return tuple(int(s) for s in shape), dtype, stream.tell()


def _check_dtype(dtype: np.dtype) -> None:
    if dtype.hasobject:
        raise ImageDecodeError(422, "npy_object_dtype", ".npy holds Python objects (pickled data), which are refused")
    if dtype.names is not None or dtype.kind not in "biuf":
        raise ImageDecodeError(
            422, "npy_dtype", f".npy dtype {dtype.str!r} is not supported; send bool, integer or float"
        )
