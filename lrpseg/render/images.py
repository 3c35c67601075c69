"""Input images (grey or RGB, 8-bit, 16-bit or float) as display RGB in [0, 1]."""

from __future__ import annotations

from typing import Any

import numpy as np

from lrpseg.render.errors import RenderInputError


def display_rgb(image: Any) -> np.ndarray:
    """(C, H, W) with C = 1 or 3, or (H, W) -> float64 (H, W, 3) in [0, 1].

    uint8 is divided by 255; other integer types (16-bit scans, 12-bit data in
    16-bit containers, signed CT values) and floats outside [0, 1] are stretched
    from their minimum to their maximum; floats within [0, 1] are kept; bool is 0/1.
    """
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[0] not in (1, 3):
        raise RenderInputError(f"image must be (C, H, W) with 1 or 3 channels, or (H, W); got shape {array.shape}")
    if array.size == 0:
        raise RenderInputError("image is empty")
    if array.dtype == bool:
        values = array.astype(np.float64)
    elif array.dtype == np.uint8:
        values = array / 255.0
    elif np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating):
        values = array.astype(np.float64)
        if not np.isfinite(values).all():
            raise RenderInputError("image contains NaN or infinite values")
        lo, hi = float(values.min()), float(values.max())
        if np.issubdtype(array.dtype, np.integer) or lo < 0.0 or hi > 1.0:
            # on halves: hi - lo of finite extremes (+-1e308) would overflow to infinity
            values = (values * 0.5 - lo * 0.5) / (hi * 0.5 - lo * 0.5) if hi > lo else np.zeros_like(values)
    else:
        raise RenderInputError(f"image must be numeric, got dtype {array.dtype}")
    return np.repeat(values, 3, axis=0).transpose(1, 2, 0) if values.shape[0] == 1 else values.transpose(1, 2, 0)
