"""Input levels as rigs and hospitals send them: declared bit depth, a window, colour handling.

A 12-bit camera image stored as 16-bit TIFF is scaled by its container (÷ 65535) unless the
caller says `bits=12`; a window (centre, width in source values, DICOM-style: modality units
such as HU after Rescale Slope/Intercept, MONOCHROME1 inverted after) maps that band of values
onto [0, 1] (lrpseg.io.window); an RGB image for a one-channel model can be reduced to its luminance
(Rec. 709 weights) or its first channel. `apply_levels` also warns when an image uses a small
fraction of its declared range, the usual sign of a wrong bit depth.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from lrpseg.io.image import DecodedImage
from lrpseg.io.window import windowed

__all__ = ["LUMINANCE", "SMALL_RANGE", "InputLevels", "LevelsError", "apply_levels", "range_warning"]

LUMINANCE = (0.2126, 0.7152, 0.0722)  # Rec. 709 / sRGB
SMALL_RANGE = 0.1  # an image spanning less than this share of [0, 1] gets a warning
Channels = Literal["reject", "luminance", "first"]


class LevelsError(ValueError):
    """The levels do not fit the image; `field` names the setting (bits, window, channels)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class InputLevels:
    bits: int | None = None  # integer samples hold this many bits (0 .. 2**bits - 1)
    window: tuple[float, float] | None = None  # (centre, width) in source values
    channels: Channels = "reject"  # what to do with RGB for a one-channel model


def apply_levels(image: DecodedImage, levels: InputLevels, model_channels: int) -> DecodedImage:
    """The image re-scaled by `levels` (from its raw source values), channels reduced if asked,
    with a warning when it uses little of its range. The input image is not changed."""
    array = image.array
    raw = image.raw if image.raw is not None else image.array
    if levels.bits is not None:
        array = by_bits(raw, levels.bits, image)
    elif levels.window is not None:
        centre, width = levels.window
        array = windowed(image, centre - width / 2.0, centre + width / 2.0)
    if image.channels == 3 and model_channels == 1 and levels.channels != "reject":
        array, raw = reduce_channels(array, raw, levels.channels)
    warnings = list(image.warnings)
    if levels.window is None:  # a window is chosen on purpose; its clipping is no accident
        note = range_warning(array, levels.bits or image.bit_depth)
        if note:
            warnings.append(note)
    if array is image.array and not warnings:
        return image
    return replace(
        image,
        array=np.ascontiguousarray(array, np.float32),
        raw=raw,
        channels=array.shape[0],
        warnings=tuple(warnings),
    )


def by_bits(raw: np.ndarray, bits: int, image: DecodedImage) -> np.ndarray:
    if raw.dtype.kind not in "ui" or image.dicom is not None:
        what = "DICOM declares its own (Bits Stored)" if image.dicom is not None else f"{raw.dtype} samples"
        raise LevelsError("params.input.bits", f"bits applies to integer images, not {what}")
    top = 2**bits - 1
    if raw.size and (int(raw.min()) < 0 or int(raw.max()) > top):
        raise LevelsError(
            "params.input.bits",
            f"values {int(raw.min())}..{int(raw.max())} do not fit {bits} bits (0..{top}); "
            "send the bit depth the samples really have",
        )
    return (raw.astype(np.float64) / top).astype(np.float32)


def reduce_channels(array: np.ndarray, raw: np.ndarray, how: Channels) -> tuple[np.ndarray, np.ndarray]:
    if how == "first":
        return array[:1], raw[:1]
    weights = np.asarray(LUMINANCE, np.float64).reshape((3,) + (1,) * (array.ndim - 1))  # images and volumes
    grey = (array.astype(np.float64) * weights).sum(0, keepdims=True)
    raw_grey = (raw.astype(np.float64) * weights).sum(0, keepdims=True)
    if raw.dtype.kind in "ui":
        raw_grey = np.rint(raw_grey)
    return grey.astype(np.float32), raw_grey.astype(raw.dtype)


def range_warning(array: np.ndarray, bits: int) -> str | None:
    """A warning when the image spans less than SMALL_RANGE of its declared range."""
    if array.size == 0:
        return None
    low, high = float(array.min()), float(array.max())
    if high - low >= SMALL_RANGE:
        return None
    hint = " or input.window" if bits > 8 else ""
    return (
        f"the image uses {100 * (high - low):.1f} % of its {bits}-bit range (from {100 * low:.1f} % to "
        f"{100 * high:.1f} % of full scale): the model sees an almost flat image. If the samples have fewer "
        f"bits than their container (a 12-bit camera in 16-bit TIFF), send params.input.bits{hint}"
    )
