"""Map source values into float32 [0, 1] and arrange samples as (C, H, W)."""

from __future__ import annotations

import numpy as np

from lrpseg.io.errors import ImageDecodeError

__all__ = ["drop_alpha", "minmax", "scale_by_dtype", "scale_by_max", "scale_float", "to_chw"]


def scale_by_max(arr: np.ndarray, max_value: float) -> np.ndarray:
    """Unsigned integers over [0, max_value] -> [0, 1] (8-bit / 255, 16-bit / 65535)."""
    return (arr.astype(np.float64) / float(max_value)).astype(np.float32)


def scale_by_dtype(arr: np.ndarray) -> np.ndarray:
    """Integers by the full range of their dtype; bool as 0/1."""
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    info = np.iinfo(arr.dtype)
    lo, hi = float(info.min), float(info.max)
    return ((arr.astype(np.float64) - lo) / (hi - lo)).astype(np.float32)


def minmax(arr: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Affine map [lo, hi] -> [0, 1] (defaults: the array's own range), clipped.

    A constant array (hi == lo) maps to zeros. Values must be finite (a rescale that overflowed,
    e.g. a DICOM RescaleSlope of 1e308, is refused). The differences are taken on halves, so
    any finite range scales without overflow (hi - lo of +-1e308 would be infinite).
    """
    values = arr.astype(np.float64)
    if not np.isfinite(values).all():
        raise ImageDecodeError(422, "non_finite", "pixel values are NaN or infinite (after rescaling)")
    lo = float(values.min()) if lo is None else float(lo)
    hi = float(values.max()) if hi is None else float(hi)
    if not hi > lo:
        return np.zeros(arr.shape, np.float32)
    return np.clip((values * 0.5 - lo * 0.5) / (hi * 0.5 - lo * 0.5), 0.0, 1.0).astype(np.float32)


def scale_float(arr: np.ndarray) -> np.ndarray:
    """Floats: must be finite; kept when already inside [0, 1], else min-max scaled."""
    if not np.all(np.isfinite(arr)):
        raise ImageDecodeError(422, "non_finite", "float image contains NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo >= 0.0 and hi <= 1.0:
        return arr.astype(np.float32)
    return minmax(arr, lo, hi)


def drop_alpha(arr: np.ndarray) -> np.ndarray:
    """(H, W, S) with S in 1..4: grey+alpha -> grey, RGBA -> RGB; (H, W) unchanged."""
    if arr.ndim == 3 and arr.shape[2] in (2, 4):
        return arr[:, :, : arr.shape[2] - 1]
    return arr


def to_chw(arr: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, C) with C in {1, 3} -> (C, H, W)."""
    if arr.ndim == 2:
        return arr[np.newaxis]
    if arr.ndim == 3 and arr.shape[2] in (1, 3):
        return np.moveaxis(arr, 2, 0)
    raise ImageDecodeError(422, "bad_channels", f"expected 1 or 3 samples per pixel, got array of shape {arr.shape}")
